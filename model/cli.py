"""``python -m model.cli describe``: parameter count and multiply-adds per sample for each preset."""

from __future__ import annotations

from typing import Annotated

import typer

from model.config import PRESET_NAMES, preset
from model.describe import describe
from model.registry import MODEL_NAMES, build_model

FRAPPE_CARDINALITIES = "958,4083,8,8,4,4,3,10,81,234"

app = typer.Typer(add_completion=False, help="Inspect the CTR models (size and cost).")


@app.callback()
def _main() -> None:
    """Keep sub-commands explicit (``describe``) even while there is only one."""


def _parse_cardinalities(text: str) -> list[int]:
    try:
        cards = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise typer.BadParameter(f"--cardinalities must be comma-separated ints, got {text!r}") from None
    if any(c < 1 for c in cards):
        raise typer.BadParameter(f"--cardinalities must all be >= 1, got {text!r}")
    return cards


@app.command("describe")
def describe_cmd(
    presets: Annotated[
        list[str] | None, typer.Option("--preset", help=f"preset(s) to describe: {', '.join(PRESET_NAMES)}")
    ] = None,
    model: Annotated[str, typer.Option(help=f"one of {', '.join(MODEL_NAMES)}")] = "dlf",
    cardinalities: Annotated[
        str, typer.Option(help="ids per categorical field incl. OOV, comma-separated (default: Frappe)")
    ] = FRAPPE_CARDINALITIES,
    num_numeric: Annotated[int, typer.Option(min=0, help="number of numeric fields")] = 0,
) -> None:
    """Print parameters and multiply-adds per sample for ``model`` under each preset."""
    cards = _parse_cardinalities(cardinalities)
    names = presets or list(PRESET_NAMES)
    rows = []
    for name in names:
        try:
            cfg = preset(name)
            net = build_model(model, cards, num_numeric, cfg, seed=0)
        except ValueError as err:
            raise typer.BadParameter(str(err)) from None
        info = describe(net, len(cards), num_numeric)
        rows.append((name, info.params, info.macs_per_sample))
    typer.echo(f"model={model} fields: {len(cards)} categorical {cards}, {num_numeric} numeric")
    typer.echo(f"{'preset':<8} {'params':>12} {'MACs/sample':>14}")
    for name, params, macs in rows:
        typer.echo(f"{name:<8} {params:>12,} {macs:>14,.0f}")


if __name__ == "__main__":
    app()
