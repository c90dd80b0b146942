"""Frappe seed ensemble trained as separate processes, then assembled into one bundle.

``train --format frappe`` trains the ensemble members one after another in one process; on a
loaded 2-core machine two single-thread processes get much more done, so the measured default
was produced this way (same configs, same seeds, same maths as ``pipeline.train_on``):

    python bench/frappe_ensemble.py member DIR 2024 2026 &   # one thread per process
    python bench/frappe_ensemble.py member DIR 2025 2027 &
    python bench/frappe_ensemble.py assemble DIR --registry registry   # K = FRAPPE_DEFAULTS["ensemble"]

``assemble`` averages the members' logits, fits the temperature on valid, writes a bundle and
appends the "DLF small (tuned default)" row to runs/bench-quality.jsonl, so ``bench-quality``
reuses it instead of retraining.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from scipy.special import expit  # noqa: E402

from bench.bench_quality import default_rows, frappe_data  # noqa: E402
from model import describe  # noqa: E402
from training.bundle.export import export_onnx  # noqa: E402
from training.bundle.writer import write_bundle  # noqa: E402
from training.config import default_config  # noqa: E402
from training.fitting.calibration import fit_temperature, predict_logits  # noqa: E402
from training.fitting.device import select_device  # noqa: E402
from training.fitting.metrics import auc_logloss  # noqa: E402
from training.pipeline import build_net, member_configs, train_on, wrap_members  # noqa: E402

FRAPPE = Path(__file__).resolve().parents[2] / "shared/data/frappe/frappe.dev.libfm"
log = logging.getLogger("training")


def member(out: Path, seeds: list[int]) -> None:
    """Train single members (the ensemble's configs for these seeds); save weights + metrics."""
    torch.set_num_threads(1)
    out.mkdir(parents=True, exist_ok=True)
    data = frappe_data(FRAPPE)
    base = default_config("frappe")
    for seed in seeds:
        cfg = dataclasses.replace(base, seed=seed, ensemble=1, calibrate=False)
        result, m = train_on(data, cfg, force_cpu=True)
        torch.save(result.net.state_dict(), out / f"s{seed}.pt")
        keep = ("valid", "best_epoch", "epochs", "seconds_per_epoch", "train_wall_seconds")
        (out / f"s{seed}.json").write_text(json.dumps({k: m[k] for k in keep} | {"history": result.history}))
        log.info("member %d: %s", seed, m["valid"])


def assemble(out: Path, k: int | None, registry: Path, set_current: bool) -> None:
    t0 = time.perf_counter()
    cfg = default_config("frappe")
    if k is not None:
        cfg = dataclasses.replace(cfg, ensemble=k)
    data = frappe_data(FRAPPE)
    cpu = select_device(cuda_available=False)
    nets, infos = [], []
    for mcfg in member_configs(cfg):
        net = build_net(mcfg, data.space)
        net.load_state_dict(torch.load(out / f"s{mcfg.seed}.pt", map_location="cpu", weights_only=True))
        nets.append(net.eval())
        infos.append(json.loads((out / f"s{mcfg.seed}.json").read_text()))
    y = data.valid.labels()
    logits = predict_logits(wrap_members(nets, None), data.valid, cpu)
    raw = auc_logloss(y, expit(logits))
    t = fit_temperature(logits, y) if cfg.calibrate else None
    net = wrap_members(nets, t)
    valid = auc_logloss(y, expit(logits / (t or 1.0)))
    desc = describe(net, len(data.space.categorical), 0)
    epochs = sum(i["epochs"] for i in infos)
    seconds = sum(i["seconds_per_epoch"] * i["epochs"] for i in infos)
    metrics = {
        "model": cfg.model,
        "preset": cfg.preset,
        "valid": valid,
        "valid_uncalibrated": raw,
        "temperature": t,
        "members": [
            {"seed": c.seed, "best_epoch": i["best_epoch"], **i["valid"]}
            for c, i in zip(member_configs(cfg), infos, strict=True)
        ],
        "test": None,
        "best_epoch": sum(i["best_epoch"] for i in infos) / len(infos),
        "epochs": epochs,
        "seconds_per_epoch": seconds / epochs,
        "samples_per_second": epochs * len(data.train) / seconds,
        "train_wall_seconds": sum(i["train_wall_seconds"] for i in infos),
        "params": desc.params,
        "macs_per_sample": desc.macs_per_sample,
        "config": cfg.to_dict(),
        "data_fingerprint": data.fingerprint,
        "assembled_from": str(out),
    }
    history = [{**h, "member": n} for n, i in enumerate(infos) for h in i["history"]]
    bundle = write_bundle(
        registry,
        model_name=cfg.model,
        space=data.space,
        write_onnx=lambda p: export_onnx(net, data.space.cardinalities, 0, p),
        metrics=metrics,
        history=history,
        extra={"preset": cfg.preset, "valid_auc": valid["auc"]},
        set_current=set_current,
    )
    row = default_rows(skip_paper=True)[0]
    if row.config.to_dict() == cfg.to_dict():  # only the default config is the bench's default row
        res = {
            "key": row.key(),
            "name": row.name,
            "group": row.group,
            "note": row.note + "; members trained as 2 parallel processes (bench/frappe_ensemble.py)",
            "model": cfg.model,
            "preset": cfg.preset,
            "valid_auc": valid["auc"],
            "valid_logloss": valid["logloss"],
            "valid_logloss_uncalibrated": raw["logloss"],
            "temperature": t,
            "ensemble": cfg.ensemble,
            **{k: metrics[k] for k in ("best_epoch", "epochs", "seconds_per_epoch", "samples_per_second")},
            "params": desc.params,
            "macs_per_sample": desc.macs_per_sample,
            "wall_seconds": metrics["train_wall_seconds"],
            "config": cfg.to_dict(),
            "device": "cpu",
        }
        with Path("runs/bench-quality.jsonl").open("a") as fh:
            fh.write(json.dumps(res, default=str) + "\n")
    print(
        json.dumps(
            {
                "bundle": str(bundle),
                "valid": valid,
                "uncalibrated": raw,
                "temperature": t,
                "members": metrics["members"],
                "seconds": time.perf_counter() - t0,
            }
        )
    )


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("member")
    m.add_argument("dir", type=Path)
    m.add_argument("seeds", type=int, nargs="+")
    a = sub.add_parser("assemble")
    a.add_argument("dir", type=Path)
    a.add_argument("--k", type=int, default=None, help="members (default FRAPPE_DEFAULTS['ensemble'])")
    a.add_argument("--registry", type=Path, default=Path("registry"))
    a.add_argument("--set-current", action="store_true")
    args = ap.parse_args()
    if args.cmd == "member":
        member(args.dir, args.seeds)
    else:
        assemble(args.dir, args.k, args.registry, args.set_current)


if __name__ == "__main__":
    main()
