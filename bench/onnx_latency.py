"""ONNX Runtime cost of the DLF presets (and baselines) side by side, in one run.

    .venv/bin/python -m bench.onnx_latency [--threads 2] [--out docs/benchmarks-onnx.md]

Random weights are fine here: latency does not depend on what the weights are. Cardinalities
default to Frappe's vocabulary sizes. Reports rows/s at batch 1000 and 100, batch-1 latency
percentiles, and each row's ratio to the small DLF preset measured in the same process.
"""

from __future__ import annotations

import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
import typer

from model import build_model, describe, preset
from training.bundle.export import export_onnx, parity_inputs

FRAPPE_CARDINALITIES = [958, 4083, 8, 8, 4, 4, 3, 10, 81, 234]
ROWS = [("dlf", "small"), ("dlf", "paper"), ("lr", "small"), ("deepfm", "small"), ("wukong", "small")]

app = typer.Typer(add_completion=False)


@dataclass
class Timing:
    model: str
    preset: str
    params: int
    macs: int
    rows_per_s_1000: float
    rows_per_s_100: float
    p50_ms_1: float
    p99_ms_1: float


def _throughput(
    sess: ort.InferenceSession, feeds: dict[str, np.ndarray], batch: int, seconds: float
) -> float:
    part = {k: v[:batch] for k, v in feeds.items()}
    sess.run(None, part)
    rows, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        sess.run(None, part)
        rows += batch
    return rows / (time.perf_counter() - start)


def _latency(sess: ort.InferenceSession, feeds: dict[str, np.ndarray], n: int) -> tuple[float, float]:
    samples = []
    for i in range(n):
        one = {k: v[i % len(v) : i % len(v) + 1] for k, v in feeds.items()}
        t = time.perf_counter()
        sess.run(None, one)
        samples.append((time.perf_counter() - t) * 1e3)
    return float(np.percentile(samples, 50)), float(np.percentile(samples, 99))


def measure(name: str, preset_name: str, threads: int, seconds: float, workdir: Path) -> Timing:
    torch.manual_seed(0)
    net = build_model(name, FRAPPE_CARDINALITIES, 0, preset(preset_name))
    desc = describe(net, num_cat=len(FRAPPE_CARDINALITIES), num_numeric=0)
    path = workdir / f"{name}-{preset_name}.onnx"
    export_onnx(net, FRAPPE_CARDINALITIES, 0, path, exporter="torchscript", parity_rows=64)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    feeds = parity_inputs(FRAPPE_CARDINALITIES, 0, rows=1000)
    p50, p99 = _latency(sess, feeds, 300 if preset_name == "small" else 60)
    return Timing(
        name,
        preset_name,
        desc.params,
        desc.macs_per_sample,
        _throughput(sess, feeds, 1000, seconds),
        _throughput(sess, feeds, 100, seconds),
        p50,
        p99,
    )


def to_markdown(rows: list[Timing], threads: int, seconds: float) -> str:
    base = rows[0]
    lines = [
        f"ONNX Runtime {ort.__version__}, CPUExecutionProvider, {threads} intra-op threads, "
        f"{platform.processor() or platform.machine()}, {seconds:.0f} s per throughput cell.",
        "",
        "| model | preset | params | MACs/sample | rows/s @1000 | rows/s @100 | p50 ms @1 | p99 ms @1 "
        "| throughput vs small DLF |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.model} | {r.preset} | {r.params:,} | {int(r.macs):,} | {r.rows_per_s_1000:,.0f} | "
            f"{r.rows_per_s_100:,.0f} | {r.p50_ms_1:.2f} | {r.p99_ms_1:.2f} | "
            f"{r.rows_per_s_1000 / base.rows_per_s_1000:.3f}x |"
        )
    return "\n".join(lines) + "\n"


@app.command()
def main(
    threads: int = typer.Option(2, help="ONNX Runtime intra-op threads"),
    seconds: float = typer.Option(3.0, help="seconds per throughput cell"),
    out: Path | None = typer.Option(None, help="write the markdown table here"),
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure(m, p, threads, seconds, Path(tmp)) for m, p in ROWS]
    table = to_markdown(rows, threads, seconds)
    print(table)
    if out is not None:
        out.write_text(table)


if __name__ == "__main__":
    app()
