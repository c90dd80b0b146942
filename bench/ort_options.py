"""ONNX Runtime session options on a bundle, measured side by side (the service's defaults come from here).

    python -m bench.ort_options --bundle <registry>/<version> [--seconds 1.0] [--rounds 3]

Each configuration runs ``threads`` Python threads calling ``session.run`` concurrently
(the inference pool's shape) at several batch sizes; configurations are interleaved
round by round and the median round is kept, so a noisy neighbour hits all of them alike.
Prints a markdown table.
"""

from __future__ import annotations

import statistics
import threading
import time
from pathlib import Path

import onnxruntime as ort
import typer

from bench.ort_ceiling import random_feeds
from service.batcher import usable_cores
from service.contract import load_schema
from service.model_holder import OrtOptions, session_options

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)

CONFIGS: dict[str, dict] = {
    "graph all, arena on, 1 thread (default)": {},
    "graph extended": {"graph_optimization": "extended"},
    "graph basic": {"graph_optimization": "basic"},
    "graph disabled": {"graph_optimization": "disable"},
    "arena off": {"memory_arena": False},
    "2 intra-op threads, no spinning": {"intra_op_threads": 2},
    "2 intra-op threads, spinning": {"intra_op_threads": 2, "allow_spinning": True},
    "session per thread": {"_per_thread": True},
}


def _feeds(bundle: Path, batch: int) -> tuple[dict, str]:
    schema = load_schema(bundle)
    return random_feeds(schema, batch, seed=batch), schema.output


def _session(bundle: Path, opts: OrtOptions) -> ort.InferenceSession:
    return ort.InferenceSession(
        str(bundle / "model.onnx"),
        sess_options=session_options(options=opts),
        providers=["CPUExecutionProvider"],
    )


def build(bundle: Path, config: dict, threads: int) -> list[ort.InferenceSession]:
    """The sessions the ``threads`` callers use: one shared, or one each."""
    config = dict(config)
    per_thread = config.pop("_per_thread", False)
    opts = OrtOptions(**config)
    if per_thread:
        return [_session(bundle, opts) for _ in range(threads)]
    return [_session(bundle, opts)] * threads


def measure(
    sessions: list[ort.InferenceSession], feeds: dict, output: str, batch: int, seconds: float
) -> float:
    """Rows/s of one thread per session entry, all calling at once for ``seconds``."""
    for s in set(sessions):
        s.run([output], feeds)
    counts = [0] * len(sessions)
    stop = time.perf_counter() + seconds

    def loop(i: int) -> None:
        s = sessions[i]
        while time.perf_counter() < stop:
            s.run([output], feeds)
            counts[i] += 1

    start = time.perf_counter()
    workers = [threading.Thread(target=loop, args=(i,)) for i in range(len(sessions))]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(counts) * batch / (time.perf_counter() - start)


@app.command()
def main(
    bundle: Path = typer.Option(..., help="bundle directory"),
    batches: str = typer.Option("1,100,1000"),
    seconds: float = typer.Option(1.0, help="seconds per measurement"),
    rounds: int = typer.Option(3, help="interleaved rounds; the median is reported"),
    threads: int = typer.Option(0, help="concurrent callers (0 = usable cores, like the pool)"),
) -> None:
    threads = threads or usable_cores()
    sizes = [int(b) for b in batches.split(",")]
    sessions = {name: build(bundle, config, threads) for name, config in CONFIGS.items()}
    feeds = {b: _feeds(bundle, b) for b in sizes}
    results: dict[tuple[str, int], list[float]] = {}
    for _ in range(rounds):
        for name in CONFIGS:
            for b in sizes:
                rate = measure(sessions[name], feeds[b][0], feeds[b][1], b, seconds)
                results.setdefault((name, b), []).append(rate)
    base = {b: statistics.median(results[(next(iter(CONFIGS)), b)]) for b in sizes}
    print(
        f"{threads} concurrent callers, median of {rounds} interleaved rounds of {seconds:g} s; rows/s (vs default)\n"
    )
    print("| configuration | " + " | ".join(f"batch {b}" for b in sizes) + " |")
    print("|---|" + "---|" * len(sizes))
    for name in CONFIGS:
        cells = []
        for b in sizes:
            v = statistics.median(results[(name, b)])
            cells.append(f"{v:,.0f} ({v / base[b]:.2f}x)")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    app()
