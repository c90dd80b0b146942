"""Per-request time of the service app against the naive peer, in-process: raw ASGI calls, no sockets.

    python -m bench.asgi_cost --registry <registry> [--requests 2000] [--rows 1] [--profile] [--python-only]

Both apps run in this process on the same bundle (the service with its embedded feature
store, access log off), called alternately, so the difference is the Python each adds per
request on top of the same ONNX Runtime call. ``--profile`` prints cProfile's top functions
of the service afterwards. Used to size the /predict fast path (docs/benchmarks.md).

``--python-only`` times the service alone with ONNX Runtime's call replaced by a constant and no
spread threads: the CPU of its own Python per request, the part a change to the request path moves
(the peer is skipped: its time is mostly the call). Run it under
``PROMETHEUS_MULTIPROC_DIR=$(mktemp -d)`` to count metric writes as ``serve --processes N`` pays them.
"""

from __future__ import annotations

import asyncio
import cProfile
import json
import logging
import os
import pstats
import time
from pathlib import Path
from typing import Any

import numpy as np
import typer

from bench.serving_engine import FRAPPE, frappe_records
from service.contract import resolve_current
from service.testing import post_scope


async def call(app: Any, body: bytes) -> int:
    """One POST /predict through ``app``; returns the status."""
    sent = False
    status: list[int] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)  # never disconnects
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])

    await app(post_scope("/predict", body), receive, send)
    return status[0]


async def timed(app: Any, body: bytes, n: int, profile: cProfile.Profile | None = None) -> tuple[float, float]:
    """(wall, process CPU) microseconds per request over ``n`` requests, after a warm-up."""
    for _ in range(200):
        status = await call(app, body)
        if status != 200:
            raise RuntimeError(f"warm-up answered {status}")
    wall, cpu = time.perf_counter(), time.process_time()
    if profile is not None:
        profile.enable()
    for _ in range(n):
        await call(app, body)
    if profile is not None:
        profile.disable()
    return (time.perf_counter() - wall) / n * 1e6, (time.process_time() - cpu) / n * 1e6


async def run(registry: Path, requests: int, rows: int, rounds: int, profile: bool, python_only: bool) -> None:
    version = resolve_current(registry)
    if version is None:
        raise typer.BadParameter(f"no bundle in {registry}", param_hint="--registry")
    os.environ["NAIVE_BUNDLE"] = str(registry / version)
    import bench.naive_peer as naive
    from service.app import create_app
    from service.settings import Settings

    body = json.dumps({"records": frappe_records(FRAPPE, max(rows, 1))[:rows]}).encode()
    settings = Settings(registry=registry, redis_url=None, model_version=version)
    if python_only:
        settings = settings.model_copy(update={"spread_threads": 0})
    app = create_app(settings)
    logging.getLogger("service.access").setLevel(logging.WARNING)
    async with app.router.lifespan_context(app):
        state = app.state.dlf
        while not state.holder.ready:
            await asyncio.sleep(0.05)
        targets = [("service", app)] if python_only else [("service", app), ("naive", naive.app)]
        if python_only:  # the service's own Python: the session's call becomes a constant
            from service.model_holder import LoadedModel

            LoadedModel._run = lambda self, session, cat, num: np.full(cat.shape[0], 0.5, np.float32)
            print("ONNX Runtime stubbed: service Python only", flush=True)
        for r in range(rounds):
            for name, target in targets:
                wall, cpu = await timed(target, body, requests)
                print(f"round {r + 1} {name:8s} {rows} row(s): wall {wall:7.1f} us/request, "
                      f"process CPU {cpu:7.1f} us/request", flush=True)  # fmt: skip
        if profile:
            prof = cProfile.Profile()
            await timed(app, body, requests, prof)
            pstats.Stats(prof).sort_stats("tottime").print_stats(30)


def main(
    registry: Path = typer.Option(..., help="bundle registry (CURRENT is used)"),
    requests: int = typer.Option(2000, help="requests per measurement"),
    rows: int = typer.Option(1, help="rows per request"),
    rounds: int = typer.Option(2, help="alternating rounds of service and peer"),
    profile: bool = typer.Option(False, help="cProfile the service afterwards"),
    python_only: bool = typer.Option(False, help="stub ONNX Runtime's call: time the service's Python alone"),
) -> None:
    asyncio.run(run(registry, requests, rows, rounds, profile, python_only))


if __name__ == "__main__":
    typer.run(main)
