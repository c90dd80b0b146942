"""Raw ONNX Runtime ceiling: one session per core, each in its own process, side by side.

    python -m bench.ort_ceiling --bundle <registry>/<version> --batch 100 --seconds 4 [--procs 2]

No HTTP, no JSON, no encoding: pre-built id matrices straight into
``session.run`` with one intra-op thread per process. The sum over processes is
what the hardware gives this model; the serving benchmark compares the service
against it. Prints one JSON line.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import typer

from service.batcher import usable_cores
from service.contract import BundleSchema, load_schema

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)

START_DELAY_S = 3.0  # spawn + session creation before the processes' common start


def _inputs(bundle: Path, batch: int, seed: int) -> tuple[ort.InferenceSession, dict, str]:
    schema = load_schema(bundle)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(str(bundle / "model.onnx"), opts, providers=["CPUExecutionProvider"])
    return session, random_feeds(schema, batch, seed), schema.output


def random_feeds(schema: BundleSchema, batch: int, seed: int) -> dict[str, np.ndarray]:
    """In-vocabulary ids and standard-normal numerics: what the graph costs, not what it predicts."""
    rng = np.random.default_rng(seed)
    feeds = {}
    if schema.categorical:
        sizes = np.array([f.vocab_size for f in schema.categorical])
        feeds[schema.cat_input] = (rng.integers(0, 1 << 30, (batch, sizes.size)) % sizes).astype(np.int64)
    if schema.numeric:
        feeds[schema.num_input] = rng.normal(size=(batch, len(schema.numeric))).astype(np.float32)
    return feeds


def wait_until(start_at: float) -> None:
    """Sleep until a shared wall-clock start, so that all processes measure the same window."""
    while time.time() < start_at:
        time.sleep(0.001)


def timed_calls(
    session: ort.InferenceSession, feeds: dict, output: str, seconds: float, start_at: float
) -> tuple[int, float, float]:
    """``session.run`` calls made over ``seconds`` from ``start_at``, with their wall and thread-CPU seconds."""
    wait_until(start_at)
    calls, t0, c0 = 0, time.perf_counter(), time.thread_time()
    while time.perf_counter() - t0 < seconds:
        session.run([output], feeds)
        calls += 1
    return calls, time.perf_counter() - t0, time.thread_time() - c0


def _worker(bundle: str, batch: int, seconds: float, seed: int, start_at: float, out: mp.Queue) -> None:
    session, feeds, output = _inputs(Path(bundle), batch, seed)
    for _ in range(3):
        session.run([output], feeds)
    calls, wall, _ = timed_calls(session, feeds, output, seconds, start_at)
    out.put(calls * batch / wall)


def ceiling(bundle: Path, batch: int, seconds: float, procs: int) -> dict:
    ctx = mp.get_context("spawn")
    queue: mp.Queue = ctx.Queue()
    start_at = time.time() + START_DELAY_S
    workers = [
        ctx.Process(target=_worker, args=(str(bundle), batch, seconds, i, start_at, queue))
        for i in range(procs)
    ]
    rates = side_by_side(workers, queue, timeout=seconds + 120)
    return {"batch": batch, "procs": procs, "rows_per_s": sum(rates), "per_proc": rates}


def side_by_side(jobs: list, out: mp.Queue, timeout: float) -> list:
    """Start every process, take one result from each off ``out`` (in finishing order), join them."""
    for job in jobs:
        job.start()
    results = [out.get(timeout=timeout) for _ in jobs]
    for job in jobs:
        job.join()
    return results


@app.command()
def main(
    bundle: Path = typer.Option(..., help="bundle directory (<registry>/<version>)"),
    batch: int = typer.Option(100, help="rows per session.run"),
    seconds: float = typer.Option(4.0),
    procs: int = typer.Option(0, help="processes (0 = usable cores)"),
) -> None:
    print(json.dumps(ceiling(bundle, batch, seconds, procs or usable_cores())))


if __name__ == "__main__":
    app()
