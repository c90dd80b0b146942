"""Frappe quality comparison (README protocol) -> docs/quality.md + docs/quality-pareto.png, in ONE run.

``python -m bench.bench_quality [--train-fraction F] [--max-epochs N] [--paper]``

Protocol: ``numpy.random.default_rng(2024).permutation`` of the dev slice, first 90 % train, last
10 % valid; vocabularies on train; every network early-stopped on valid AUC. Every row is trained
in this invocation (nothing is reused from earlier runs) and the wall time printed in the report is
this invocation's. ``--train-fraction`` / ``--max-epochs`` shrink every row the same way when the
full comparison does not fit the time available; the report says so.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import shlex
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.pareto import BATCH, pareto_front, plot, rows_per_second
from model import describe
from service.contract import atomic_write_text
from training.bundle.export import export_onnx
from training.bundle.precision import quantize_int8, score_onnx
from training.config import TrainConfig
from training.data.dataset import PreparedData, Split, prepare_data
from training.data.spec import builtin_spec
from training.pipeline import member_configs, train_on
from training.recipes import Recipe, load_recipe

log = logging.getLogger("training")

# (valid AUC, valid logloss) measured with other libraries on this exact split (frappe README).
REFERENCES: list[tuple[str, float, float]] = [
    ("LightGBM 4.7", 0.9586, 0.276),
    ("DeepFM (FuxiCTR)", 0.9557, 0.276),
    ("WuKong (FuxiCTR)", 0.9549, 0.305),
    ("FM (FuxiCTR)", 0.9488, 0.341),
    ("DLF (authors' code)", 0.9468, 0.382),
]
ABLATIONS: dict[str, dict[str, bool]] = {
    "full": {},
    "w/o gate": {"use_gate": False},
    "w/o RLI": {"use_rli": False},
    "w/o NAF": {"use_naf": False},
    "w/o RLI+NAF": {"use_rli": False, "use_naf": False},
}
# one FuxiCTR-like setting each at the references' width (paper preset: embedding 64, DNN 512-256)
BASELINES: dict[str, dict[str, Any]] = {
    "lr": {"lr": 1e-2, "batch_size": 512, "embedding_l2": 1e-3},
    "fm": {"lr": 1e-2, "batch_size": 512, "embedding_l2": 1e-3},
    "deepfm": {},
    "dcnv2": {},
    "wukong": {},
}


@dataclass
class BenchRow:
    name: str
    config: TrainConfig
    group: str = "dlf"  # dlf | ablation | baseline
    note: str = ""
    pareto: bool = False  # export and time this row's graph


def ablation_config(recipe: Recipe) -> TrainConfig:
    """The ablation sweep: one member of the recipe (same width and fit settings), no ensemble/teacher."""
    return member_configs(recipe.train)[0].replace(calibrate=False)


def default_rows(
    recipe: Recipe, *, paper: bool = False, baselines: bool = True, compare: Recipe | None = None
) -> list[BenchRow]:
    base = recipe.train
    rows = [
        BenchRow(
            f"recipe {recipe.name} v{recipe.version}", base, "dlf", "`training/recipes` file", pareto=True
        ),
    ]
    if compare is not None:  # what the recipe replaces, timed side by side with it
        rows.append(BenchRow(f"recipe {compare.name} v{compare.version}", compare.train, "dlf",
                             "the recipe it is measured against", pareto=True))  # fmt: skip
    if paper:
        rows.append(BenchRow("DLF paper preset", base.replace(
            preset="paper", model_overrides={}, ensemble=1, distill=None, epochs=1, patience=0), "dlf"))  # fmt: skip
    for label, ov in ABLATIONS.items():
        cfg = ablation_config(recipe)
        cfg = cfg.replace(model_overrides={**cfg.model_overrides, **ov})
        note = "also the single-network point of the Pareto table" if label == "full" else ""
        rows.append(BenchRow(f"DLF {label} (ablation)", cfg, "ablation", note, pareto=label == "full"))
    if baselines:
        common = {
            "lr": 1e-3,
            "batch_size": 1024,
            "embedding_l2": 0.05,
            "dropout": 0.2,
            "epochs": 40,
            "patience": 2,
        }
        for name, kw in BASELINES.items():
            cfg = TrainConfig(model=name, preset="paper", threads=base.threads, **(common | kw))
            rows.append(BenchRow(name, cfg, "baseline"))
    return rows


def frappe_data(path: str | Path, train_fraction: float = 1.0) -> PreparedData:
    """The protocol split; ``train_fraction`` < 1 keeps a fixed random subset of the train rows."""
    data = prepare_data(path, builtin_spec("frappe"), valid_fraction=0.1, split_seed=2024)
    if train_fraction < 1.0:
        n = len(data.train)
        keep = np.sort(np.random.default_rng(0).permutation(n)[: int(n * train_fraction)])
        rows = data.train.rows if data.train.rows is not None else np.arange(n)
        data.train = Split(data.train.arrays, rows[keep])
    return data


def _capped(cfg: TrainConfig, max_epochs: int | None, batch_size: int | None = None) -> TrainConfig:
    """Every row shrunk the same way: epochs capped, optionally one batch size for all."""
    if batch_size is not None:
        cfg = cfg.replace(batch_size=batch_size)
    if max_epochs is None or cfg.epochs <= max_epochs:
        return cfg
    changes: dict[str, Any] = {"epochs": max_epochs}
    if cfg.distill is not None and "epochs" in cfg.distill.student:
        changes["distill"] = {
            **cfg.distill.model_dump(),
            "student": {**cfg.distill.student, "epochs": max_epochs},
        }
    return cfg.replace(**changes)


def _export(net: Any, data: PreparedData, path: Path) -> Path:
    export_onnx(net, data.space.cardinalities, len(data.space.numeric), path)
    return path


def _cost(net: Any, data: PreparedData) -> dict[str, int]:
    d = describe(net, len(data.space.categorical), len(data.space.numeric))
    return {"params": d.params, "macs_per_sample": d.macs_per_sample}


def run_row(data: PreparedData, row: BenchRow, work: Path) -> list[dict[str, Any]]:
    """Train one row; returns its result plus, for the recipe row, the teacher and int8 variants."""
    t0 = time.perf_counter()
    fit, m = train_on(data, row.config)
    wall = time.perf_counter() - t0
    base = {
        "group": row.group,
        "note": row.note,
        "model": row.config.model,
        "best_epoch": m["best_epoch"],
        "epochs": m["epochs"],
        "seconds_per_epoch": m["seconds_per_epoch"],
        "params": m["params"],
        "macs_per_sample": m["macs_per_sample"],
        "train_wall_seconds": wall,
        "config": row.config.to_dict(),
        "structure": m["structure"],
    }
    out = [{**base, "name": row.name, "valid_auc": m["valid"]["auc"], "valid_logloss": m["valid"]["logloss"],
            "temperature": m["temperature"], "teacher": m["teacher"]}]  # fmt: skip
    if not row.pareto:
        return out
    slug = "".join(c if c.isalnum() else "-" for c in row.name)
    out[0]["onnx"] = str(_export(fit.net, data, work / f"{slug}.onnx"))
    if row.name.startswith("recipe"):
        if fit.teacher is not None:
            teacher = m["teacher"]
            k = len(teacher["members"])
            out.append({**base, "name": f"teacher: {k}-member ensemble", "note": "cross-fitted teacher of the recipe row"
                        if teacher["cross_fit"] else "teacher of the recipe row", "valid_auc": teacher["valid"]["auc"],
                        "valid_logloss": teacher["valid"]["logloss"], "temperature": None, "teacher": None,
                        **_cost(fit.teacher, data),
                        "onnx": str(_export(fit.teacher, data, work / f"{slug}-teacher.onnx"))})  # fmt: skip
        int8 = work / f"{slug}-int8.onnx"
        quantize_int8(Path(out[0]["onnx"]), int8)
        scored = score_onnx(int8, data.valid, data.space)
        fp32 = score_onnx(Path(out[0]["onnx"]), data.valid, data.space)
        out.append({**base, "name": f"{row.name} int8", "note": f"ONNX Runtime dynamic int8 of the recipe row "
                    f"(valid AUC drop {fp32['auc'] - scored['auc']:+.5f})", "valid_auc": scored["auc"],
                    "valid_logloss": scored["logloss"], "temperature": m["temperature"], "teacher": None,
                    "onnx": str(int8)})  # fmt: skip
    return out


def _log_setup() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(message)s")


def _row_job(job: tuple[str, float, BenchRow, str]) -> list[dict[str, Any]]:
    """One row in a worker process (the split is rebuilt there: cheaper than pickling it)."""
    data_path, train_fraction, row, tmp = job
    log.info("bench row %s", row.name)
    return run_row(frappe_data(data_path, train_fraction), row, Path(tmp))


def render(results: list[dict[str, Any]], args: dict[str, Any], wall: float, data: PreparedData) -> str:
    """docs/quality.md text."""
    best_ref_auc = max(r[1] for r in REFERENCES)
    best_ref_ll = min(r[2] for r in REFERENCES)

    def beaten(r: dict[str, Any]) -> str:
        names = [n for n, a, ll in REFERENCES if r["valid_auc"] > a and r["valid_logloss"] < ll]
        return "all" if len(names) == len(REFERENCES) else (", ".join(names) or "none")

    reduced = args["train_fraction"] < 1.0 or args["max_epochs"] is not None or args.get("batch_size")
    lines = [
        "# Model quality on Frappe (dev slice)",
        "",
        "Generated by `bench/bench_quality.py` in one invocation; rerun it rather than editing by hand.",
        "Protocol of `../shared/data/frappe/README.md`: `numpy.random.default_rng(2024).permutation` of the",
        f"57,722 rows, first 90 % train, last 10 % valid ({len(data.valid):,} rows); vocabularies from train only;",
        "every network early-stopped on valid AUC with its best weights restored. Hyper-parameters were",
        "chosen on the valid split (there is no test split in the dev slice; the held-out Frappe rows are",
        "for the end-to-end check through the service). Machine: 2 CPU cores shared with other jobs, fp32.",
        "",
        f"Command: `{args['command']}`  ",
        f"Wall time of this invocation: {wall / 60:.1f} min (training, export, scoring and timing of every row).",
        "",
    ]
    if reduced:
        lines += [
            f"**Reduced run**: {len(data.train):,} train rows (fraction {args['train_fraction']:g} of the 51,949, "
            f"fixed random subset), at most {args['max_epochs'] or 'the configured'} epochs per network"
            + (
                f" and batch size {args['batch_size']} (more steps for the same compute)"
                if args.get("batch_size")
                else ""
            )
            + ", the same for every row, so the full model and its ablations stay comparable; absolute numbers are "
            "lower than a full run's (the networks are under-trained).",
            "",
        ]
    dlf = [r for r in results if r["group"] == "dlf"]
    winners = [r["name"] for r in dlf if r["valid_auc"] > best_ref_auc and r["valid_logloss"] < best_ref_ll]
    lines += ["## Summary", "", "Rows that beat every reference on both valid AUC and logloss: "
              + (", ".join(winners) if winners else "none in this run") + ".", ""]  # fmt: skip
    pts = [r for r in results if "rows_per_s" in r]
    if pts:
        front = pareto_front(pts)
        lines += [
            f"## Serving cost against quality (Pareto; ONNX Runtime, batch {BATCH}, 1 thread)",
            "",
            "![valid AUC against rows/s](quality-pareto.png)",
            "",
            f"| graph | valid AUC | valid logloss | rows/s (batch 100, 1 thread) | x {args.get('compare') or 'the teacher'} | MACs / sample | Pareto |",
            "|---|---|---|---|---|---|---|",
        ]
        ref = f"recipe {args['compare']} " if args.get("compare") else "teacher"
        ens = next((p["rows_per_s"] for p in pts if p["name"].startswith(ref)), None)
        for p in sorted(pts, key=lambda p: -p["rows_per_s"]):
            ratio = f"{p['rows_per_s'] / ens:.2f}" if ens else "-"
            lines.append(
                f"| {p['name']} | {p['valid_auc']:.4f} | {p['valid_logloss']:.4f} | {p['rows_per_s']:,.0f} | {ratio} | "
                f"{p['macs_per_sample'] / 1e6:.2f} M | {'yes' if p['name'] in front else ''} |"
            )
        lines.append("")
    lines += [
        "## Results (valid split)",
        "",
        "| model | group | valid AUC | valid logloss | references beaten on both | best epoch | epochs run | s / epoch | train wall s | params | MACs / sample | note |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['name']} | {r['group']} | {r['valid_auc']:.4f} | {r['valid_logloss']:.4f} | {beaten(r)} | "
            f"{r['best_epoch']:g} | {r['epochs']:g} | {r['seconds_per_epoch']:.1f} | {r['train_wall_seconds']:.0f} | "
            f"{r['params']:,} | {r['macs_per_sample'] / 1e6:.2f} M | {_note(r)} |"
        )
    abl = {r["name"]: r for r in results if r["group"] == "ablation"}
    full = abl.get("DLF full (ablation)")
    if full:
        deltas = [f"{n.removeprefix('DLF ').removesuffix(' (ablation)')} AUC {r['valid_auc'] - full['valid_auc']:+.4f}"
                  for n, r in abl.items() if r is not full]  # fmt: skip
        holds = all(full["valid_auc"] >= r["valid_auc"] for r in abl.values())
        lines += ["", f"Ablation deltas vs the full model at the same setting: {'; '.join(deltas)}. "
                  f"Order full >= each ablation on valid AUC: {'holds' if holds else 'does NOT hold'}."]  # fmt: skip
    lines += [
        "",
        f"- Recipe row: the structure of the `{args.get('recipe', 'frappe')}` recipe (`training/recipes/`: teacher",
        "  members, distillation, calibration) trained by the same `train_on` that `python -m training.cli train` runs.",
        *(
            [
                "- Teacher row: the recipe's cross-fitted members averaged (each member skips one fold of the train",
                "  rows, so its logits on that fold are out-of-fold distillation targets); not calibrated.",
            ]
            if any(r["name"].startswith("teacher") for r in results)
            else []
        ),
        *(
            [
                f"- `recipe {args['compare']}` row: the recipe the default is measured against, trained in this run;",
                "  its graph is timed side by side with the recipe's (the `x ...` column of the Pareto table).",
            ]
            if args.get("compare")
            else []
        ),
        "- int8 rows: ONNX Runtime dynamic quantisation of a recipe row's graph, scored through ORT.",
        "- Ablations: one member of the recipe (same width, same fit settings), one part switched off.",
        *(
            ["- Baselines: one FuxiCTR-like setting each at the references' width, not a search."]
            if any(r["group"] == "baseline" for r in results)
            else ["- Baselines: not run in this invocation."]
        ),
        "- rows/s: every graph timed in this process, round-robin, median of 3 rounds; graphs of the same",
        "  architecture (recipe student, single member) differ only by timing noise on the shared cores.",
        "",
        "## Reference points (same split, other libraries, from the data README)",
        "",
        "| model | valid AUC | valid logloss |",
        "|---|---|---|",
        *[f"| {n} | {a:.4f} | {ll:.3f} |" for n, a, ll in REFERENCES],
        "",
        "## Configurations",
        "",
    ]
    for r in results:
        c = dict(r["config"])
        mc = c.pop("model_config")
        lines.append(f"- **{r['name']}**: `{json.dumps(c, default=str)}`; network `{json.dumps(mc)}`")
    return "\n".join(lines) + "\n"


def _note(r: dict[str, Any]) -> str:
    parts = [r["note"]] if r.get("note") else []
    if r.get("teacher"):
        parts.append(f"teacher valid AUC {r['teacher']['valid']['auc']:.4f}")
    if r.get("temperature") is not None:
        parts.append(f"temperature {r['temperature']:.3f} fitted on valid")
    return "; ".join(parts)


def run_bench(
    data_path: str | Path,
    out: str | Path,
    *,
    recipe: str = "frappe",
    train_fraction: float = 1.0,
    max_epochs: int | None = None,
    batch_size: int | None = None,
    paper: bool = False,
    baselines: bool = True,
    seconds: float = 1.5,
    jobs: int = 1,
    compare: str | None = "frappe-ensemble",
) -> list[dict[str, Any]]:
    """Train every row, time the DLF graphs side by side, write the report and the Pareto plot."""
    t0 = time.perf_counter()
    command = "python -m bench.bench_quality " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    data = frappe_data(data_path, train_fraction)
    rec = load_recipe(recipe)
    rows = default_rows(
        rec, paper=paper, baselines=baselines, compare=load_recipe(compare) if compare else None
    )
    log.info("bench-quality: %d rows, %d train rows, max epochs %s", len(rows), len(data.train), max_epochs)
    results: list[dict[str, Any]] = []
    out = Path(out)
    with tempfile.TemporaryDirectory(prefix="bench-quality-") as tmp:
        for row in rows:
            row.config = _capped(row.config, max_epochs, batch_size)
        if jobs > 1:  # rows are independent: one process per row, `jobs` at a time, order kept
            with ProcessPoolExecutor(
                jobs, mp_context=mp.get_context("spawn"), initializer=_log_setup
            ) as pool:
                done = list(pool.map(_row_job, [(str(data_path), train_fraction, row, tmp) for row in rows]))
        else:
            done = [run_row(data, row, Path(tmp)) for row in rows]
        for row_results in done:
            for r in row_results:
                log.info("bench row %s: AUC %.4f logloss %.4f", r["name"], r["valid_auc"], r["valid_logloss"])
                results.append(r)
        graphs = {r["name"]: Path(r["onnx"]) for r in results if "onnx" in r}
        cat = data.valid.take(np.arange(len(data.valid)))[0]
        speed = rows_per_second(graphs, cat, seconds=seconds)
    for r in results:
        if r["name"] in speed:
            r["rows_per_s"] = speed[r["name"]]
        r.pop("onnx", None)
    wall = time.perf_counter() - t0
    args = {
        "command": command,
        "train_fraction": train_fraction,
        "max_epochs": max_epochs,
        "batch_size": batch_size,
        "jobs": jobs,
        "compare": compare,
    }
    # the finished run, kept so a report can be re-rendered from it (never mixed with other runs)
    raw = Path("runs") / f"bench-quality-{time.strftime('%Y%m%dT%H%M%S')}.json"
    raw.parent.mkdir(parents=True, exist_ok=True)
    raw.write_text(json.dumps({"args": args, "wall": wall, "train_rows": len(data.train), "results": results},
                              default=str))  # fmt: skip
    write_report(results, args, wall, data, out)
    return results


def write_report(results: list[dict[str, Any]], args: dict[str, Any], wall: float, data: PreparedData,
                 out: Path) -> None:  # fmt: skip
    pts = [r for r in results if "rows_per_s" in r]
    plot(pts, pareto_front(pts), out.with_name(out.stem + "-pareto.png"),
         f"Frappe valid AUC vs ONNX Runtime rows/s ({len(data.train):,} train rows)")  # fmt: skip
    atomic_write_text(out, render(results, args, wall, data))


def rerender(run_file: Path, data_path: Path, out: Path) -> None:
    """Rewrite the report from one finished run's saved results (same run, same wall time)."""
    run = json.loads(run_file.read_text())
    cmd = run["args"]["command"].split()  # runs saved before "recipe" was recorded
    run["args"].setdefault("recipe", cmd[cmd.index("--recipe") + 1] if "--recipe" in cmd else "frappe")
    data = frappe_data(data_path, run["args"]["train_fraction"])
    write_report(run["results"], run["args"], run["wall"], data, out)


def main(
    data: Path = Path("../shared/data/frappe/frappe.dev.libfm"),
    out: Path = Path("docs/quality.md"),
    recipe: str = "frappe",
    train_fraction: float = 1.0,
    max_epochs: int | None = None,
    batch_size: int | None = None,
    paper: bool = False,
    baselines: bool = True,
    seconds: float = 1.5,
    jobs: int = 1,
    compare: str = "frappe-ensemble",
    rerender_from: Path | None = None,
) -> None:
    """Frappe comparison (README protocol) in one run -> docs/quality.md and docs/quality-pareto.png."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if rerender_from is not None:
        rerender(rerender_from, data, out)
        return
    run_bench(data, out, recipe=recipe, train_fraction=train_fraction, max_epochs=max_epochs,
              batch_size=batch_size, paper=paper,
              baselines=baselines, seconds=seconds, jobs=jobs, compare=compare or None)  # fmt: skip


if __name__ == "__main__":
    import typer

    typer.run(main)
