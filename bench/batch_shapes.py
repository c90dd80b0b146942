"""ONNX Runtime cost per call of the graph as exported against the graph with its batch arithmetic
folded (training/bundle/batch_shapes.py), side by side in one process.

    .venv/bin/python -m bench.batch_shapes [--rounds 3] [--batches 1,4,10,32,100,1000]

The network is the Frappe recipe's (training/recipes/frappe.yaml: DLF small, embedding 32) with
Frappe's vocabulary sizes and random weights (cost does not depend on the weights). Sessions are
opened the way the service opens them (``service.model_holder.session_options``: one intra-op
thread, no spinning); also the service's fixed-batch session for 1-row calls
(``DLF_ORT_SINGLE_ROW_SESSION``) of each graph. Per round and batch size the sessions take turns
call by call on this thread (``service.model_holder.median_call_s``: a noisy neighbour hits all of
them alike); the median call of the best round is kept.
"""

from __future__ import annotations

import tempfile
from functools import partial
from pathlib import Path

import numpy as np
import onnxruntime as ort
import typer

from bench.onnx_latency import FRAPPE_CARDINALITIES
from bench.single_row_session import optimised_nodes
from model import build_model
from service.model_holder import OrtOptions, median_call_s, session_options
from training.bundle.export import export_onnx, parity_inputs
from training.recipes import load_recipe

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


def _session(path: Path, one_row: bool = False) -> tuple[ort.InferenceSession, int]:
    """The service's session on ``path`` (batch fixed to 1 when ``one_row``) and its node count
    after ONNX Runtime's optimisation."""
    fixed = "batch" if one_row else None
    opts = session_options(options=OrtOptions())
    if fixed:
        opts.add_free_dimension_override_by_name(fixed, 1)
    session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    return session, optimised_nodes(path, fixed)


@app.command()
def main(
    rounds: int = typer.Option(3),
    batches: str = typer.Option("1,4,10,32,100,1000", help="rows per call"),
    calls_per_round: int = typer.Option(1000, help="calls per session and round at batch 1 (/ batch size)"),
) -> None:
    train = load_recipe("frappe").train
    net = build_model(train.model, FRAPPE_CARDINALITIES, 0, train.network_config(), seed=0).eval()
    sizes = [int(b) for b in batches.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        graphs = {"as exported": Path(tmp) / "exported.onnx", "folded": Path(tmp) / "folded.onnx"}
        export_onnx(net, FRAPPE_CARDINALITIES, 0, graphs["as exported"], fold_shapes=False)
        info = export_onnx(net, FRAPPE_CARDINALITIES, 0, graphs["folded"])
        print(f"graph nodes as exported / folded: {info['batch_shapes']['nodes']}")
        sessions = {name: _session(path) for name, path in graphs.items()}
        single = {f"{name}, batch fixed to 1": _session(path, one_row=True) for name, path in graphs.items()}
    best: dict[tuple[str, int], float] = {}
    for r in range(rounds):
        for batch in sizes:
            feeds = parity_inputs(FRAPPE_CARDINALITIES, 0, rows=batch, seed=batch)
            runs = {**sessions, **single} if batch == 1 else sessions
            outputs = [s.run(None, feeds)[0] for s, _ in runs.values()]
            assert all(np.allclose(o, outputs[0], atol=1e-6) for o in outputs), "the graphs disagree"
            calls = max(20, int(calls_per_round / batch))
            medians = median_call_s([partial(s.run, None, feeds) for s, _ in runs.values()], calls)
            for name, seconds_per_call in zip(runs, medians, strict=True):
                us = seconds_per_call * 1e6
                best[name, batch] = min(best.get((name, batch), us), us)
                print(f"round {r + 1} batch {batch:5d} {name}: {us:9.1f} us per call", flush=True)
    nodes = {name: n for name, (_, n) in {**sessions, **single}.items()}
    print(
        "\n| rows per call | "
        + " | ".join(f"{n} ({nodes[n]} nodes) us" for n in sessions)
        + " | folded / as exported |"
    )
    print("|---|" + "---|" * (len(sessions) + 1))
    for batch in sizes:
        a, b = best["as exported", batch], best["folded", batch]
        print(f"| {batch} | {a:.0f} | {b:.0f} | {b / a:.2f}x |")
    for name in single:
        print(f"| 1, {name} ({nodes[name]} nodes) | {best[name, 1]:.0f} us | | |")


if __name__ == "__main__":
    app()
