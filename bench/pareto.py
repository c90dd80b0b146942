"""Serving cost of exported graphs: ONNX Runtime rows/s at batch 100 on one thread, Pareto front, plot.

Every graph is timed in the same process, round-robin (a few short rounds each, median kept), so
the ratios hold even when other jobs share the cores.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from service.contract import CAT_INPUT

BATCH = 100


def session(path: str | Path) -> ort.InferenceSession:
    """One intra-op and one inter-op thread: the per-core cost a CPU replica pays."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def rows_per_second(
    paths: dict[str, Path], cat: np.ndarray, *, seconds: float = 1.5, rounds: int = 3
) -> dict[str, float]:
    """Median rows/s per graph over ``rounds`` round-robin rounds of ``seconds`` each (batch 100)."""
    sessions = {name: session(p) for name, p in paths.items()}
    batches = [np.ascontiguousarray(cat[i : i + BATCH]) for i in range(0, len(cat) - BATCH + 1, BATCH)]
    if not batches:
        raise ValueError(f"need at least {BATCH} rows to time batch {BATCH}")
    for sess in sessions.values():  # warm up
        sess.run(None, {CAT_INPUT: batches[0]})
    samples: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(rounds):
        for name, sess in sessions.items():
            n, i, t0 = 0, 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                sess.run(None, {CAT_INPUT: batches[i % len(batches)]})
                n += BATCH
                i += 1
            samples[name].append(n / (time.perf_counter() - t0))
    return {name: statistics.median(v) for name, v in samples.items()}


def pareto_front(points: list[dict[str, Any]], x: str = "rows_per_s", y: str = "valid_auc") -> set[str]:
    """Names of points no other point beats on both ``x`` and ``y`` (higher is better on both)."""
    front = set()
    for p in points:
        dominated = any(
            q[x] >= p[x] and q[y] >= p[y] and (q[x] > p[x] or q[y] > p[y]) for q in points if q is not p
        )
        if not dominated:
            front.add(p["name"])
    return front


def plot(points: list[dict[str, Any]], front: set[str], path: Path, title: str) -> None:
    """Scatter of valid AUC against rows/s (log x), Pareto points joined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for p in points:
        on = p["name"] in front
        ax.scatter(p["rows_per_s"], p["valid_auc"], s=60 if on else 35, marker="o" if on else "x")
        ax.annotate(p["name"], (p["rows_per_s"], p["valid_auc"]), fontsize=8, xytext=(4, 4),
                    textcoords="offset points")  # fmt: skip
    fp = sorted((p for p in points if p["name"] in front), key=lambda p: p["rows_per_s"])
    ax.plot([p["rows_per_s"] for p in fp], [p["valid_auc"] for p in fp], "--", linewidth=1)
    ax.set_xscale("log")
    ax.set_xlabel(f"ONNX Runtime rows/s, batch {BATCH}, 1 thread (log)")
    ax.set_ylabel("valid AUC")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
