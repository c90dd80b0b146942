"""Command line: ``python -m training.cli train|evaluate|export|generate|retrain|demo|collect``."""

from __future__ import annotations

import json
import logging
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from training.lifecycle.cli import register as register_lifecycle_commands
from training.lifecycle.collect_cli import register as register_collect_command

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Train CTR models and write ONNX bundles.")


class Fmt(StrEnum):
    frappe = "frappe"
    criteo = "criteo"
    avazu = "avazu"
    csv = "csv"
    parquet = "parquet"


def _setup_logging(verbose: bool = True) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(asctime)s %(message)s")


def _parse_sets(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"--set expects key=value, got {item!r}")
        out[key.strip()] = yaml.safe_load(raw)
    return out


@app.command()
def train(
    data: Annotated[Path, typer.Argument(help="training file (or the whole file when splitting)")],
    fmt: Annotated[Fmt, typer.Option("--format", help="input format")] = Fmt.csv,
    schema: Annotated[Path | None, typer.Option(help="YAML/JSON schema file (csv/parquet)")] = None,
    valid_path: Annotated[Path | None, typer.Option(help="separate validation file")] = None,
    test_path: Annotated[Path | None, typer.Option(help="separate test file")] = None,
    recipe: Annotated[
        str | None, typer.Option(help="recipe YAML file or name in training/recipes (default: per format)")
    ] = None,
    split: Annotated[float | None, typer.Option(help="valid fraction when no --valid-path")] = None,
    test_split: Annotated[float, typer.Option(help="test fraction when no --valid-path")] = 0.0,
    split_seed: Annotated[int | None, typer.Option(help="default_rng seed of the split permutation")] = None,
    min_count: Annotated[int | None, typer.Option(help="vocabulary min count (default: schema / 1)")] = None,
    model: Annotated[str | None, typer.Option(help="dlf|lr|fm|deepfm|dcnv2|wukong")] = None,
    preset: Annotated[str | None, typer.Option(help="model preset: small|paper")] = None,
    lr: Annotated[float | None, typer.Option()] = None,
    batch_size: Annotated[int | None, typer.Option()] = None,
    epochs: Annotated[int | None, typer.Option()] = None,
    patience: Annotated[int | None, typer.Option()] = None,
    embedding_l2: Annotated[float | None, typer.Option()] = None,
    weight_decay: Annotated[float | None, typer.Option()] = None,
    dropout: Annotated[float | None, typer.Option()] = None,
    monitor: Annotated[str | None, typer.Option(help="auc|logloss: best-checkpoint criterion")] = None,
    eval_every: Annotated[float | None, typer.Option(help="validate every this fraction of an epoch")] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    ensemble: Annotated[int | None, typer.Option(help="members (seeds seed, seed+1, ...) to average")] = None,
    precision: Annotated[
        str | None, typer.Option(help="fp32|int8|fp16 export, kept only if valid AUC drops <= 0.0005")
    ] = None,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads")] = None,
    ema_decay: Annotated[
        float | None, typer.Option(help="EMA of the weights per step, exported instead of them (0 = off)")
    ] = None,
    calibrate: Annotated[
        bool | None, typer.Option("--calibrate/--no-calibrate", help="fit a temperature on valid")
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="model setting key=value (repeatable)")
    ] = None,
    registry: Annotated[Path, typer.Option(help="bundle registry directory")] = Path("registry"),
    set_current: Annotated[
        bool, typer.Option("--set-current", help="point <registry>/CURRENT at the new bundle")
    ] = False,
    work_dir: Annotated[
        Path | None, typer.Option(help="memmap encoded data here (inputs larger than memory)")
    ] = None,
    checkpoint: Annotated[
        Path | None, typer.Option(help="also save a torch checkpoint (for `export`)")
    ] = None,
    cpu: Annotated[bool, typer.Option("--cpu", help="train on CPU even when a GPU is present")] = False,
    progress: Annotated[bool, typer.Option(help="progress bars")] = True,
) -> None:
    """Train a model and write a bundle; prints the bundle path and metrics as JSON."""
    from training.config import apply_overrides
    from training.pipeline import train_bundle_outcome
    from training.recipes import default_recipe, load_recipe

    _setup_logging()
    overrides = {
        "model": model,
        "preset": preset,
        "lr": lr,
        "batch_size": batch_size,
        "epochs": epochs,
        "patience": patience,
        "embedding_l2": embedding_l2,
        "weight_decay": weight_decay,
        "dropout": dropout,
        "monitor": monitor,
        "eval_every": eval_every,
        "seed": seed,
        "ensemble": ensemble,
        "calibrate": calibrate,
        "precision": precision,
        "threads": threads,
        "ema_decay": ema_decay,
    }
    if set_:
        overrides["model_overrides"] = _parse_sets(set_)
    try:
        rec = load_recipe(recipe) if recipe is not None else default_recipe(fmt.value)
        cfg = apply_overrides(rec.train if rec is not None else None, **overrides)
        out = train_bundle_outcome(
            data,
            fmt=fmt.value,
            schema=schema,
            valid_path=valid_path,
            test_path=test_path,
            valid_fraction=split if split is not None else (rec.valid_fraction if rec else 0.1),
            test_fraction=test_split,
            split_seed=split_seed if split_seed is not None else (rec.split_seed if rec else 2024),
            min_count=min_count,
            config=cfg,
            recipe=rec,
            registry=registry,
            set_current=set_current,
            work_dir=work_dir,
            checkpoint=checkpoint,
            force_cpu=cpu,
            progress=progress,
        )
    except (ValueError, FileNotFoundError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e
    if out.bundle_dir is not None:
        m = out.metrics
        summary = {
            "bundle": str(out.bundle_dir),
            "recipe": m["recipe"],
            "structure": m["structure"],
            "valid": m["valid"],
            "teacher_valid": (m.get("teacher") or {}).get("valid"),
            "test": m["test"],
            "epochs": m["epochs"],
        }
        typer.echo(json.dumps(summary, indent=2))


@app.command()
def evaluate(
    bundle: Annotated[Path, typer.Argument(help="bundle directory <registry>/<version>")],
    data: Annotated[Path, typer.Argument(help="labelled data file")],
    fmt: Annotated[Fmt, typer.Option("--format")] = Fmt.csv,
    schema: Annotated[
        Path | None, typer.Option(help="schema file (csv/parquet; default: from the bundle)")
    ] = None,
) -> None:
    """AUC / logloss of a bundle's ONNX model (onnxruntime) on a labelled file."""
    from training.bundle.evaluate import evaluate_bundle

    try:
        result = evaluate_bundle(bundle, data, fmt=fmt.value, schema_path=schema)
    except (ValueError, FileNotFoundError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e
    typer.echo(json.dumps(result, indent=2))


@app.command()
def export(
    checkpoint: Annotated[Path, typer.Argument(help="checkpoint written by `train --checkpoint`")],
    registry: Annotated[Path, typer.Option()] = Path("registry"),
    set_current: Annotated[bool, typer.Option("--set-current")] = False,
) -> None:
    """Re-export a saved checkpoint as a new bundle version (ONNX + parity check)."""
    from training.pipeline import export_checkpoint

    _setup_logging()
    typer.echo(str(export_checkpoint(checkpoint, registry, set_current=set_current)))


@app.command()
def generate(
    out_dir: Annotated[Path, typer.Argument(help="where to write synthetic.<fmt> + schema.yaml")],
    rows: Annotated[int, typer.Option()] = 20_000,
    seed: Annotated[int, typer.Option()] = 0,
    fmt: Annotated[str, typer.Option("--format", help="csv|parquet")] = "csv",
) -> None:
    """Write deterministic synthetic CTR data and its schema file."""
    from training.data.synthetic import generate as gen

    files = gen(out_dir, rows=rows, seed=seed, fmt=fmt)  # type: ignore[arg-type]
    typer.echo(json.dumps({"data": str(files.data), "schema": str(files.schema), "rows": files.rows}))


register_lifecycle_commands(app)
register_collect_command(app)

if __name__ == "__main__":
    app()
