"""One-row ONNX Runtime calls: the bundle's session against the same graph with its batch fixed to 1.

    python -m bench.single_row_session --bundle <registry>/<version> [--calls 2000] [--rounds 3]

Both sessions are opened the way the service opens them (``service.model_holder.load_model``:
one intra-op thread, no spinning); calls alternate round by round on this thread, the median
per round is printed and the best round kept. Also prints each session's node count after
ONNX Runtime's graph optimisation (written to a temporary file). Backs
``DLF_ORT_SINGLE_ROW_SESSION`` (docs/benchmarks.md).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import typer

from bench.ort_ceiling import random_feeds
from service.model_holder import OrtOptions, batch_dim, load_model, session_options, with_single_row_session

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


def optimised_nodes(model: Path, fixed: str | None) -> int:
    """Nodes of ``model`` left after ONNX Runtime's optimisation, with the batch dimension ``fixed`` to 1 or not."""
    with tempfile.TemporaryDirectory() as tmp:
        opts = session_options(options=OrtOptions())
        opts.optimized_model_filepath = str(Path(tmp) / "opt.onnx")
        opts.log_severity_level = 3  # not the warning that an optimised model is host-specific
        if fixed:
            opts.add_free_dimension_override_by_name(fixed, 1)
        ort.InferenceSession(
            str(model), sess_options=opts, providers=["CPUExecutionProvider"]
        )
        return len(onnx.load(opts.optimized_model_filepath).graph.node)


@app.command()
def main(
    bundle: Path = typer.Option(..., help="bundle directory (registry/version)"),
    calls: int = typer.Option(2000, help="1-row calls per session per round"),
    rounds: int = typer.Option(3),
) -> None:
    options = OrtOptions(intra_op_threads=1, inter_op_threads=1, single_row_session=False)
    model = load_model(bundle, options=options, available_providers=["CPUExecutionProvider"])
    # built here, not by load_model, which keeps it only when it times faster (a folded graph's is not)
    model = with_single_row_session(model, options, ["CPUExecutionProvider"], model.warm_up())
    if model.single_row_session is None:
        raise typer.BadParameter("this graph has no symbolic batch dimension", param_hint="--bundle")
    feeds = random_feeds(model.schema, 1, seed=1)
    sessions = {
        "dynamic batch (the bundle as is)": model.session,
        "batch fixed to 1": model.single_row_session,
    }
    outputs = [np.asarray(s.run(None, feeds)[0]) for s in sessions.values()]
    print(f"max |difference| of the two outputs: {float(np.abs(outputs[0] - outputs[1]).max()):.2e}")
    best: dict[str, float] = {}
    for r in range(rounds):
        for name, session in sessions.items():
            for _ in range(50):
                session.run(None, feeds)
            times = []
            for _ in range(calls):
                start = time.perf_counter()
                session.run(None, feeds)
                times.append(time.perf_counter() - start)
            us = statistics.median(times) * 1e6
            best[name] = min(best.get(name, us), us)
            print(f"round {r + 1} {name}: median {us:.1f} us per 1-row call")
    dim = batch_dim(model.session)
    nodes = {
        "dynamic batch (the bundle as is)": optimised_nodes(bundle / "model.onnx", None),
        "batch fixed to 1": optimised_nodes(bundle / "model.onnx", dim),
    }
    base = best["dynamic batch (the bundle as is)"]
    print("\n| session | nodes after optimisation | us per 1-row call (best round's median) | vs dynamic |")
    print("|---|---|---|---|")
    for name in sessions:
        print(f"| {name} | {nodes[name]} | {best[name]:.0f} | {best[name] / base:.2f}x |")


if __name__ == "__main__":
    app()
