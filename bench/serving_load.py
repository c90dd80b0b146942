"""Serving throughput and latency, configurations side by side in one run.

    .venv/bin/python -m bench.serving_load [--registry R] [--seconds 8] [--concurrency 32]

Starts a real uvicorn process per configuration (micro-batching off / on, embedded feature
store / Redis) over the same bundle, drives it with concurrent HTTP clients sending one-row
and ten-row requests, and reports rows/s and p50/p99 latency with ratios to the first row.
Without --registry it trains a small DLF on generated data first.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import typer

# Process helpers shared with the end-to-end tests (real uvicorn / redis-server on free ports).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))
from serving_support import RedisServer, publish_with_cli, uvicorn_server  # noqa: E402

from service.contract import load_schema, load_vocab, resolve_current  # noqa: E402

app = typer.Typer(add_completion=False)


@dataclass
class Result:
    name: str
    rows_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int


def sample_rows(registry: Path, n: int, seed: int = 0) -> list[dict]:
    """Rows of known vocabulary values (and numerics) drawn from the bundle itself."""
    bundle = registry / str(resolve_current(registry))
    schema = load_schema(bundle)
    rng = np.random.default_rng(seed)
    vocabs = {f.name: list(load_vocab(bundle, f)) for f in schema.categorical}
    rows = []
    for _ in range(n):
        row: dict = {name: values[rng.integers(len(values))] for name, values in vocabs.items()}
        row.update({f.name: float(rng.gamma(2.0, 3.0)) for f in schema.numeric})
        rows.append(row)
    return rows


async def drive(
    url: str, rows: list[dict], rows_per_request: int, concurrency: int, seconds: float
) -> Result:
    latencies: list[float] = []
    errors = 0
    sent_rows = 0
    deadline = time.perf_counter() + seconds

    async def client(worker: int) -> None:
        nonlocal errors, sent_rows
        i = worker
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            while time.perf_counter() < deadline:
                start = (i * rows_per_request) % (len(rows) - rows_per_request)
                body = {"records": rows[start : start + rows_per_request]}
                t = time.perf_counter()
                resp = await http.post("/predict", json=body)
                latencies.append((time.perf_counter() - t) * 1e3)
                if resp.status_code == 200:
                    sent_rows += rows_per_request
                else:
                    errors += 1
                i += concurrency

    start = time.perf_counter()
    await asyncio.gather(*(client(w) for w in range(concurrency)))
    wall = time.perf_counter() - start
    q = statistics.quantiles(latencies, n=100)
    return Result("", sent_rows / wall, q[49], q[98], errors)


def ensure_registry(registry: Path | None, workdir: Path) -> Path:
    if registry is not None:
        return registry
    from training import train_bundle
    from training.data.synthetic import generate

    files = generate(workdir / "data", rows=20_000, seed=0)
    out = workdir / "registry"
    train_bundle(files.data, fmt="csv", schema=files.schema, registry=out, set_current=True)
    return out


@app.command()
def main(
    registry: Path | None = typer.Option(None, help="bundle registry (default: train a small DLF first)"),
    seconds: float = typer.Option(8.0, help="seconds of load per configuration"),
    concurrency: int = typer.Option(32, help="concurrent HTTP clients"),
    out: Path | None = typer.Option(None, help="append the markdown table here"),
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        reg = ensure_registry(registry, work)
        rows = sample_rows(reg, 2000)
        redis = RedisServer(work)
        redis.start()
        publish_with_cli(reg, redis.url, "bench:")
        configs = [
            ("batching off, embedded, 1 row/req", {"DLF_BATCHING_ENABLED": "false"}, 1),
            ("batching on, embedded, 1 row/req", {"DLF_BATCHING_ENABLED": "true"}, 1),
            ("batching on, Redis, 1 row/req", {"REDIS_URL": redis.url, "DLF_REDIS_PREFIX": "bench:"}, 1),
            ("batching off, embedded, 10 rows/req", {"DLF_BATCHING_ENABLED": "false"}, 10),
            ("batching on, embedded, 10 rows/req", {"DLF_BATCHING_ENABLED": "true"}, 10),
        ]
        results = []
        try:
            for name, env, per_request in configs:
                env = {"DLF_REGISTRY": str(reg), "DLF_ORT_INTRA_OP_THREADS": "1", **env}
                with uvicorn_server(env, work / "uvicorn.log") as url:
                    asyncio.run(drive(url, rows, per_request, concurrency, 1.0))  # warm-up
                    result = asyncio.run(drive(url, rows, per_request, concurrency, seconds))
                result.name = name
                results.append(result)
                print(f"{name}: {result.rows_per_s:,.0f} rows/s p50 {result.p50_ms:.1f} ms", flush=True)
        finally:
            redis.stop()
    lines = [
        f"{concurrency} concurrent clients, {seconds:.0f} s per row, one uvicorn worker, ORT 1 intra-op thread.",
        "",
        "| configuration | rows/s | p50 ms | p99 ms | errors | rows/s vs first row |",
        "|---|---|---|---|---|---|",
    ]
    base = results[0].rows_per_s
    for r in results:
        lines.append(
            f"| {r.name} | {r.rows_per_s:,.0f} | {r.p50_ms:.1f} | {r.p99_ms:.1f} | {r.errors} | "
            f"{r.rows_per_s / base:.2f}x |"
        )
    table = "\n".join(lines) + "\n"
    print(table)
    if out is not None:
        out.write_text(table)


if __name__ == "__main__":
    app()
