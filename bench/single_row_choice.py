"""Which session serves a lone 1-row call, as ``load_model`` decides it on this host.

    python -m bench.single_row_choice <bundle> [<bundle> ...]

``faster_single_row`` times the main session and the fixed-batch 1-row session at load and keeps
the latter only when it is faster, which depends on the graph and the host: on a GPU host the
main session runs on CUDA and the 1-row one on the CPU (on the H100 the CPU won for the Frappe
recipe, 1.2 vs 3.6 ms, and for the paper preset, 9 vs 14 ms: docs/gpu.md); on the CPU both run
there and the fixed batch wins only for a graph that kept its batch arithmetic at export. Prints
the decision (load_model's log line) and a fresh timing of the paths kept per bundle, one JSON
line each.
"""

from __future__ import annotations

import json
import logging
from functools import partial
from pathlib import Path

import typer

from service.model_holder import load_model, median_call_s

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command()
def main(bundles: list[Path], calls: int = typer.Option(50, help="1-row calls timed per path")) -> None:
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")  # load_model logs its decision
    for bundle in bundles:
        model = load_model(bundle)
        cat, num = model.neutral_row()
        single = model.single_row_session
        paths = [partial(model.run, cat, num)]
        if single is not None:
            paths.append(partial(model.run_lone, cat, num))
        times = median_call_s(paths, calls)
        print(json.dumps({
            "bundle": bundle.name,
            "main_provider": model.provider,
            "one_row_session": single.get_providers()[0] if single is not None else None,
            "main_1row_ms": round(times[0] * 1e3, 3),
            "one_row_session_ms": round(times[1] * 1e3, 3) if single is not None else None,
        }), flush=True)


if __name__ == "__main__":
    app()
