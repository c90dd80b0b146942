"""``python -m training.cli retrain``: the retraining job as a command (registered by ``training/cli.py``).

Exit status: 0 promoted, 3 refused by the gate (the candidate stays in the
registry with its ``promotion.json``), 2 bad input. ``--collected DIR`` trains on
``collect`` shards, alone or mixed with ``--data`` (docs/closed-loop.md).
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
from pathlib import Path
from typing import Annotated

import typer

EXIT_REFUSED = 3


def retrain_cmd(
    registry: Annotated[Path, typer.Option(help="bundle registry (CURRENT is the model to beat)")],
    data: Annotated[
        Path | None, typer.Option(help="new labelled training data (with --collected: the base data)")
    ] = None,
    collected: Annotated[
        Path | None, typer.Option(help="directory of `collect` shards to train on (alone or with --data)")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="frappe|criteo|avazu|csv|parquet")] = "csv",
    schema: Annotated[Path | None, typer.Option(help="YAML/JSON schema file (csv/parquet)")] = None,
    eval_data: Annotated[
        Path | None, typer.Option(help="labelled evaluation file (default: the validation split)")
    ] = None,
    warm_start: Annotated[
        bool, typer.Option("--warm-start", help="start from CURRENT's weights and extend its vocab")
    ] = False,
    tolerance: Annotated[
        float,
        typer.Option(envvar="DLF_PROMOTION_TOLERANCE", help="promote if AUC >= current AUC - tolerance"),
    ] = 0.001,
    redis_url: Annotated[
        str | None, typer.Option(envvar="REDIS_URL", help="publish vocab + reload notice here")
    ] = None,
    prefix: Annotated[str, typer.Option(envvar="DLF_REDIS_PREFIX", help="Redis key prefix")] = "dlf:",
    channel: Annotated[
        str | None, typer.Option(envvar="DLF_RELOAD_CHANNEL", help="reload channel (default <prefix>reload)")
    ] = None,
    keep: Annotated[int, typer.Option(min=2, help="bundle versions kept in the registry")] = 10,
    recipe: Annotated[
        str | None, typer.Option(help="recipe file/name (default: the recipe CURRENT was trained with)")
    ] = None,
    model: Annotated[str | None, typer.Option(help="dlf|lr|fm|deepfm|dcnv2|wukong (cold start)")] = None,
    preset: Annotated[str | None, typer.Option(help="small|paper (cold start)")] = None,
    epochs: Annotated[int | None, typer.Option()] = None,
    batch_size: Annotated[int | None, typer.Option()] = None,
    lr: Annotated[float | None, typer.Option()] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    split: Annotated[float, typer.Option(help="validation fraction")] = 0.1,
    cpu: Annotated[bool, typer.Option("--cpu", help="train on CPU even when a GPU is present")] = False,
) -> None:
    """Train a candidate on new data, gate it against CURRENT (same eval rows, onnxruntime), promote or refuse."""
    from training.lifecycle.retrain import retrain
    from training.recipes import load_recipe

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    stack = contextlib.ExitStack()
    try:
        overrides = {"model": model, "preset": preset, "epochs": epochs, "batch_size": batch_size}
        overrides |= {"lr": lr, "seed": seed}
        recipe_format = fmt  # the default recipe when CURRENT has none: the data's own format
        if collected is not None:  # shards (+ base data) -> one Parquet file, removed afterwards
            from training.lifecycle.collected import collected_dataset

            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dlf-collected-")))
            data, schema, _ = collected_dataset(
                collected, tmp / "train.parquet", base=data, base_format=fmt, base_schema=schema
            )
            fmt = "parquet"
        elif data is None:
            raise ValueError("give --data, --collected, or both")
        out = retrain(
            data,
            registry=registry,
            fmt=fmt,
            schema=schema,
            eval_data=eval_data,
            warm_start=warm_start,
            tolerance=tolerance,
            redis_url=redis_url,
            prefix=prefix,
            channel=channel,
            keep=keep,
            recipe=load_recipe(recipe) if recipe is not None else None,
            overrides=overrides,
            valid_fraction=split,
            force_cpu=cpu,
            recipe_format=recipe_format,
        )
    except (ValueError, FileNotFoundError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e
    finally:
        stack.close()
    typer.echo(json.dumps({"bundle": str(out.candidate), **out.record}, indent=2, default=str))
    if not out.promoted:
        raise typer.Exit(EXIT_REFUSED)


def demo_cmd(
    registry: Annotated[Path, typer.Option(help="bundle registry to bootstrap")],
    rows: Annotated[int, typer.Option(min=100, help="synthetic rows to generate")] = 20_000,
    seed: Annotated[int, typer.Option(help="synthetic data seed")] = 0,
    model: Annotated[str, typer.Option(help="dlf|lr|fm|deepfm|dcnv2|wukong")] = "dlf",
    preset: Annotated[str, typer.Option(help="small|paper")] = "small",
    epochs: Annotated[int, typer.Option(min=1)] = 5,
    batch_size: Annotated[int, typer.Option(min=1)] = 1024,
    redis_url: Annotated[
        str | None, typer.Option(envvar="REDIS_URL", help="publish vocab + reload notice here")
    ] = None,
    prefix: Annotated[str, typer.Option(envvar="DLF_REDIS_PREFIX", help="Redis key prefix")] = "dlf:",
    cpu: Annotated[bool, typer.Option("--cpu", help="train on CPU even when a GPU is present")] = False,
) -> None:
    """Bootstrap an empty registry: generate synthetic data and run the retrain job on it.

    The first model is promoted through the same gate, vocab publication and reload notice as
    every later one, so a fresh stack (compose `bootstrap`, `bash run.sh`) starts the way it runs.
    """
    import tempfile

    from training.config import default_config
    from training.data.synthetic import generate
    from training.lifecycle.retrain import retrain

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    cfg = default_config("csv", model=model, preset=preset, epochs=epochs, batch_size=batch_size)
    with tempfile.TemporaryDirectory(prefix="dlf-demo-") as tmp:
        files = generate(tmp, rows=rows, seed=seed)
        out = retrain(
            files.data,
            registry=registry,
            schema=files.schema,
            redis_url=redis_url,
            prefix=prefix,
            config=cfg,
            force_cpu=cpu,
        )
    typer.echo(json.dumps({"bundle": str(out.candidate), **out.record}, indent=2, default=str))
    if not out.promoted:
        raise typer.Exit(EXIT_REFUSED)


def register(app: typer.Typer) -> None:
    """Add the ``retrain`` and ``demo`` commands to the training CLI."""
    app.command("retrain")(retrain_cmd)
    app.command("demo")(demo_cmd)
