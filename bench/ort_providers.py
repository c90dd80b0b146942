"""ONNX Runtime execution providers side by side on one bundle: CUDA vs CPU, per batch size.

    python -m bench.ort_providers --bundle <registry>/<version> [--seconds 1.5] [--out table.md]

What a GPU host changes for this model, measured in one process: per-call latency (p50/p99,
numpy in and out, so host-device copies are included, as in the service) and rows/s for
each batch size, on every provider this onnxruntime build has among CUDA and CPU (CPU with
ONNX Runtime's default intra-op threads, i.e. all cores). The CUDA outputs are checked
against the CPU outputs on the same ids before anything is timed. Prints a Markdown table
and, last, one JSON line. On a machine without the CUDA provider it measures the CPU alone.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import typer

from bench.ort_ceiling import random_feeds
from service.contract import load_schema
from service.model_holder import CPU, CUDA
from service.provider_guard import preload_cuda_libraries

BATCHES = (1, 10, 100, 1000, 10_000, 100_000)
app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


def open_session(model: Path, provider: str) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    providers = [provider] if provider == CPU else [provider, CPU]
    session = ort.InferenceSession(str(model), opts, providers=providers)
    if session.get_providers()[0] != provider:
        raise RuntimeError(f"{provider} asked for, {session.get_providers()} in use")
    return session


def time_batch(session: ort.InferenceSession, feeds: dict[str, np.ndarray], seconds: float) -> dict:
    """Per-call latencies for ``seconds`` after a warm-up of a few calls (allocations, kernel choice)."""
    for _ in range(3):
        session.run(None, feeds)
    samples: list[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(samples) < 5:
        t = time.perf_counter()
        session.run(None, feeds)
        samples.append(time.perf_counter() - t)
    lat = np.array(samples) * 1e3
    batch = next(iter(feeds.values())).shape[0]
    return {
        "batch": batch,
        "calls": len(samples),
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
        "rows_per_s": batch * len(samples) / (lat.sum() / 1e3),
    }


def max_difference(a: ort.InferenceSession, b: ort.InferenceSession, feeds: dict[str, np.ndarray]) -> float:
    return float(np.max(np.abs(a.run(None, feeds)[0] - b.run(None, feeds)[0])))


@app.command()
def main(
    bundle: Path = typer.Option(..., help="bundle directory (holds model.onnx and schema)"),
    seconds: float = typer.Option(1.5, help="timed seconds per provider and batch size"),
    out: Path | None = typer.Option(None, help="also write the Markdown table here"),
    max_batch: int = typer.Option(max(BATCHES), help="largest batch size measured"),
) -> None:
    batches = [b for b in BATCHES if b <= max_batch]
    available = ort.get_available_providers()
    providers = [p for p in (CUDA, CPU) if p in available]
    if CUDA in providers:
        preload_cuda_libraries()
    schema = load_schema(bundle)
    sessions = {p: open_session(bundle / "model.onnx", p) for p in providers}
    feeds = random_feeds(schema, max(batches), seed=0)
    diff = diff_no_tf32 = None
    if CUDA in sessions:
        diff = max_difference(sessions[CUDA], sessions[CPU], feeds)
        # is the gap TF32's? the same comparison with CUDA's float32 products exact
        strict = ort.InferenceSession(str(bundle / "model.onnx"), providers=[(CUDA, {"use_tf32": "0"}), CPU])
        diff_no_tf32 = max_difference(strict, sessions[CPU], feeds)
    results = {
        p: [time_batch(s, {k: v[:b] for k, v in feeds.items()}, seconds) for b in batches]
        for p, s in sessions.items()
    }
    head = "| batch | " + " | ".join(f"{p} p50 ms | p99 ms | rows/s" for p in providers)
    lines = [head + (" | CUDA / CPU rows/s |" if CUDA in providers else " |")]
    lines.append("|---" * (1 + 3 * len(providers) + (CUDA in providers)) + "|")
    for i, batch in enumerate(batches):
        cells = [f"{batch:,}"]
        for p in providers:
            r = results[p][i]
            cells += [f"{r['p50_ms']:.3f}", f"{r['p99_ms']:.3f}", f"{r['rows_per_s']:,.0f}"]
        if CUDA in providers:
            cells.append(f"{results[CUDA][i]['rows_per_s'] / results[CPU][i]['rows_per_s']:.2f}x")
        lines.append("| " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    print(f"onnxruntime {ort.__version__} on {platform.node()}, providers {providers}")
    if diff is not None:
        print(f"max |CUDA - CPU| over {max(batches):,} rows: {diff:.2e} (TF32 off: {diff_no_tf32:.2e})")
    print(table)
    if out is not None:
        out.write_text(table + "\n")
    print(json.dumps({"onnxruntime": ort.__version__, "providers": providers, "max_abs_diff": diff,
                      "max_abs_diff_no_tf32": diff_no_tf32,
                      "results": results}))


if __name__ == "__main__":
    app()
