"""Microseconds of each per-request step of /predict's loop-side work, on real Frappe rows.

    python -m bench.request_pieces --registry <registry> [--rows 100] [--redis-url redis://127.0.0.1:6379/0]

Times, on the event loop's side of a request (no HTTP, no inference): the JSON parse of the body,
``parse_records``, ``unique_keys``, the Redis store's lookup when every key is cached (the vocab is
published under a fresh key prefix, deleted afterwards; the cache is warmed first), ``assign_ids``,
and the impression ids and serialisation. Best of three passes over 40 different requests. Backs
the cache and encoding rows of docs/benchmarks.md; run it at two commits to compare.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import typer

from bench.serving_engine import FRAPPE, drop_prefix, frappe_records, publish
from service.contract import load_schema, resolve_current
from service.encoding import assign_ids, parse_records
from service.impressions import new_impressions
from service.redis_store import RedisFeatureStore
from service.settings import Settings

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


def best_us(fn: Callable[[int], Any], n: int, passes: int = 3, repeat: int = 5) -> float:
    """Best over ``passes`` of the mean microseconds of ``fn(i)`` for i in range(n)."""
    best = float("inf")
    for _ in range(passes):
        start = time.perf_counter()
        for _ in range(repeat):
            for i in range(n):
                fn(i)
        best = min(best, (time.perf_counter() - start) / (repeat * n) * 1e6)
    return best


async def lookups_us(store: RedisFeatureStore, version: str, keys: list[dict[str, set[str]]]) -> float:
    for k in keys:  # warm the cache: every later lookup is all hits
        await store.lookup(version, k)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(5):
            for k in keys:
                await store.lookup(version, k)
        best = min(best, (time.perf_counter() - start) / (5 * len(keys)) * 1e6)
    return best


@app.command()
def main(
    registry: Path = typer.Option(..., help="bundle registry (CURRENT is used)"),
    rows: int = typer.Option(100, help="rows per request"),
    redis_url: str = typer.Option("redis://127.0.0.1:6379/0"),
) -> None:
    version = resolve_current(registry)
    if version is None:
        raise typer.BadParameter(f"no bundle in {registry}", param_hint="--registry")
    schema = load_schema(registry / version)
    records = frappe_records(FRAPPE, 40 * rows)
    bodies = [records[i : i + rows] for i in range(0, 40 * rows, rows)]
    raw = [orjson.dumps({"records": b}) for b in bodies]
    parsed = [parse_records(b, schema, max_rows=max(rows, 1000)) for b in bodies]
    keys = [p.unique_keys() for p in parsed]
    prefix = f"pieces-{uuid.uuid4().hex[:8]}:"
    publish(registry, version, redis_url, prefix)
    try:
        store = RedisFeatureStore.from_settings(
            Settings(redis_url=redis_url, redis_prefix=prefix, registry=registry)
        )

        async def run() -> tuple[float, dict]:
            try:
                us = await lookups_us(store, version, keys)
                return us, (await store.lookup(version, keys[0])).ids
            finally:
                await store.close()

        lookup_us, ids = asyncio.run(run())
    finally:
        drop_prefix(redis_url, prefix)
    n = len(bodies)
    distinct = sum(len(v) for v in keys[0].values())
    print(
        f"{rows} rows per request, {distinct} distinct categorical values in the first; microseconds per request:"
    )
    print(f"  JSON parse of the body       {best_us(lambda i: orjson.loads(raw[i]), n):7.1f}")
    print(
        f"  parse_records                {best_us(lambda i: parse_records(bodies[i], schema, max_rows=1000), n):7.1f}"
    )
    print(f"  unique_keys                  {best_us(lambda i: parsed[i].unique_keys(), n):7.1f}")
    print(f"  Redis store lookup (cached)  {lookup_us:7.1f}")
    print(f"  assign_ids                   {best_us(lambda i: assign_ids(parsed[i], ids), n):7.1f}")
    print(
        f"  impression ids + rows JSON   {best_us(lambda i: (new_impressions(rows), orjson.dumps(bodies[i])), n):7.1f}"
    )


if __name__ == "__main__":
    app()
