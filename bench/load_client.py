"""HTTP load generator for the serving benchmark, run as its own process.

    python -m bench.load_client --url http://127.0.0.1:8000 --bodies bodies.jsonl \
        --connections 32 --seconds 8 [--rate 200] --out result.json

Closed loop (default): each connection sends its next request when the last
answer arrived. Open loop (``--rate``): requests start on a fixed schedule
whatever the answers do, which is how overload looks from outside. Both honour
``Retry-After`` on 503 (that connection waits before its next request), as a
production client would.

Hand-rolled on asyncio + httptools (both come with uvicorn[standard]) instead of
httpx: an HTTP client in Python costs CPU on the same two cores as the servers,
and this one costs a few tens of microseconds per request. It records every
request's status and latency, so 200s and 503s get separate percentiles.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httptools
import numpy as np
import typer

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)

# Seconds per slice of a summary's timeline (where in a run its slow answers were).
TIMELINE_STEP_S = 0.5
# the summary lists the slowest 1 % of answered requests, at least this many
SLOWEST_MIN = 10


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; one request in flight at a time."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[tuple[int, float | None]] | None = None
        self.retry_after: float | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"retry-after":
            self.retry_after = float(value)

    def on_message_complete(self) -> None:
        if not self.parser.should_keep_alive():  # "Connection: close": as any HTTP client, reconnect
            self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result((self.parser.get_status_code(), self.retry_after))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError(f"connection lost: {exc}"))

    async def send(self, request: bytes, timeout: float) -> tuple[int, float | None]:
        assert self.transport is not None
        self.retry_after = None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return await asyncio.wait_for(self.waiter, timeout)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


@dataclass
class Record:
    """Per request: when it started (s since the run began), latency ms, status (0 = timeout, -1 = error)."""

    start: list[float] = field(default_factory=list)
    latency_ms: list[float] = field(default_factory=list)
    status: list[int] = field(default_factory=list)
    retry_after_ok: int = 0
    send_lag_ms: list[float] = field(default_factory=list)  # open loop: how late each request left
    send_lag_at: list[float] = field(default_factory=list)  # ... and when (s since the run began)

    def add(self, start: float, latency_ms: float, status: int) -> None:
        self.start.append(start)
        self.latency_ms.append(latency_ms)
        self.status.append(status)

    def late(self, scheduled: float, lag_ms: float) -> None:
        """An open-loop request scheduled at ``scheduled`` (s since the run began) left ``lag_ms`` late."""
        self.send_lag_at.append(scheduled)
        self.send_lag_ms.append(lag_ms)


def build_requests(host: str, path: str, bodies: list[bytes]) -> list[bytes]:
    head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
    return [(head + f"Content-Length: {len(b)}\r\n\r\n").encode() + b for b in bodies]


class Load:
    def __init__(self, url: str, requests: list[bytes], timeout: float, honour_retry_after: bool) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.requests = requests
        self.timeout = timeout
        self.honour = honour_retry_after
        self.record = Record()
        self.next_body = 0
        self.t0 = 0.0

    async def connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(_Connection, self.host, self.port)
        return conn

    def body(self) -> bytes:
        self.next_body = (self.next_body + 1) % len(self.requests)
        return self.requests[self.next_body]

    async def one(self, conn: _Connection, scheduled: float | None = None) -> tuple[_Connection, float]:
        """Send one request on ``conn``; returns the connection to reuse and the Retry-After wait."""
        start = time.perf_counter()
        begin = scheduled if scheduled is not None else start  # open loop: count from the schedule
        if scheduled is not None:
            self.record.late(scheduled - self.t0, (start - scheduled) * 1e3)
        try:
            status, retry_after = await conn.send(self.body(), self.timeout)
        except TimeoutError:
            status, retry_after = 0, None
        except (ConnectionError, OSError):
            status, retry_after = -1, None
        latency = (time.perf_counter() - begin) * 1e3
        self.record.add(start - self.t0, latency, status)
        if status == 503 and retry_after is not None:
            self.record.retry_after_ok += 1
        if status <= 0 or conn.closed:
            conn.close()
            conn = await self.connect()
        wait = retry_after if (status == 503 and retry_after and self.honour) else 0.0
        return conn, wait

    async def closed_loop(self, connections: int, seconds: float, stop_file: Path | None = None) -> None:
        deadline = time.perf_counter() + seconds

        def going() -> bool:
            return time.perf_counter() < deadline and not (stop_file is not None and stop_file.exists())

        async def worker() -> None:
            conn = await self.connect()
            while going():
                conn, wait = await self.one(conn)
                if wait:
                    await asyncio.sleep(min(wait, max(0.0, deadline - time.perf_counter())))
            conn.close()

        self.t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))

    async def open_loop(self, rate: float, seconds: float, max_connections: int) -> None:
        """Start requests every 1/rate s; idle connections are reused, new ones opened up to a cap."""
        idle: list[_Connection] = [await self.connect() for _ in range(min(32, max_connections))]
        opened = len(idle)
        tasks: set[asyncio.Task[None]] = set()
        interval = 1.0 / rate
        self.t0 = time.perf_counter()
        n = 0

        async def fire(scheduled: float) -> None:
            nonlocal opened
            if idle:
                conn = idle.pop()
            elif opened < max_connections:
                opened += 1
                conn = await self.connect()
            else:  # every connection busy: this request is late before it starts; count it as sent
                self.record.add(scheduled - self.t0, float("nan"), -2)
                return
            conn, _ = await self.one(conn, scheduled)  # open loop: the schedule already spaces requests
            idle.append(conn)

        while (now := time.perf_counter()) - self.t0 < seconds:
            scheduled = self.t0 + n * interval
            if scheduled > now:
                await asyncio.sleep(scheduled - now)
            task = asyncio.create_task(fire(scheduled))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            n += 1
        if tasks:
            await asyncio.gather(*tasks)
        for conn in idle:
            conn.close()


def percentile(values: np.ndarray, q: float) -> float | None:
    return float(np.percentile(values, q)) if values.size else None


def summarise(
    record: Record, rows_per_request: int, wall_s: float, step_s: float = TIMELINE_STEP_S, t0: float | None = None
) -> dict:
    status = np.array(record.status, dtype=np.int64)
    lat = np.array(record.latency_ms, dtype=np.float64)
    ok = lat[status == 200]
    ok_start = np.array(record.start, dtype=np.float64)[status == 200]
    n_slow = max(SLOWEST_MIN, math.ceil(ok.size / 100))
    slowest = np.argsort(-ok, kind="stable")[:n_slow]
    shed = lat[status == 503]
    return {
        "requests": int(status.size),
        "ok": int(ok.size),
        "rows_per_s": ok.size * rows_per_request / wall_s,
        "p50_ms": percentile(ok, 50),
        "p99_ms": percentile(ok, 99),
        "status_503": int(shed.size),
        "p99_503_ms": percentile(shed, 99),
        "max_503_ms": float(shed.max()) if shed.size else None,
        "retry_after_on_503": record.retry_after_ok,
        "timeouts": int((status == 0).sum()),
        "errors": int(((status != 200) & (status != 503) & (status != 0)).sum()),  # timeouts counted apart
        "not_sent_no_connection": int((status == -2).sum()),
        "other_status": sorted({int(s) for s in status if s not in (200, 503, 0, -1, -2)}),
        "wall_s": wall_s,
        "cdf_ms": [float(x) for x in np.percentile(ok, np.linspace(0, 100, 201))] if ok.size else [],
        "timeline": timeline(record, step_s),
        # open loop: how late requests left this process against their schedule (its own CPU share);
        # that lateness is inside every latency above, as it would be for a real client
        "send_lag_p50_ms": percentile(np.array(record.send_lag_ms), 50),
        "send_lag_p99_ms": percentile(np.array(record.send_lag_ms), 99),
        # which answers set the p99, and when: with ``t0`` (the run's start on time.perf_counter, i.e.
        # CLOCK_MONOTONIC) another process can line them up with a scheduler trace (bench/sched_trace.py)
        "t0": t0,
        "slowest_ok": [[float(ok_start[i]), float(ok[i])] for i in slowest],
    }


def timeline(record: Record, step_s: float = TIMELINE_STEP_S) -> list[dict]:
    """Per ``step_s`` of the run (by start time): requests, 200s, 503s and the 200s' p99: where in a
    run its slow answers were (the start of an overload, or throughout); and, open loop, how late
    this client itself sent at most (a slice slow at the server while the client kept time was
    the server's, or the CPU's it shares)."""
    start = np.array(record.start, dtype=np.float64)
    status = np.array(record.status, dtype=np.int64)
    lat = np.array(record.latency_ms, dtype=np.float64)
    lag_at = np.array(record.send_lag_at, dtype=np.float64)
    lag = np.array(record.send_lag_ms, dtype=np.float64)
    out = []
    for lo in np.arange(0.0, float(start.max()) + step_s if start.size else 0.0, step_s):
        part = (start >= lo) & (start < lo + step_s)
        ok = lat[part & (status == 200)]
        late = lag[(lag_at >= lo) & (lag_at < lo + step_s)]
        out.append({"from_s": float(lo), "requests": int(part.sum()), "ok": int(ok.size),
                    "status_503": int((part & (status == 503)).sum()), "p99_ms": percentile(ok, 99),
                    "send_lag_max_ms": float(late.max()) if late.size else None})
    return out


@app.command()
def main(
    url: str = typer.Option(..., help="base URL of the server"),
    bodies: Path = typer.Option(..., help="JSON lines file: one request body per line"),
    rows_per_request: int = typer.Option(..., help="rows in each body (for rows/s)"),
    connections: int = typer.Option(8, help="closed loop: concurrent connections; open loop: the cap"),
    seconds: float = typer.Option(8.0, help="measured seconds"),
    warmup: float = typer.Option(1.0, help="unmeasured seconds first"),
    rate: float = typer.Option(0.0, help="open loop: requests per second (0 = closed loop)"),
    timeout: float = typer.Option(2.0, help="client timeout per request (s), like wrk's default"),
    honour_retry_after: bool = typer.Option(True, help="wait Retry-After seconds after a 503"),
    path: str = typer.Option("/predict"),
    out: Path | None = typer.Option(None, help="write the summary JSON here"),
    stop_file: Path | None = typer.Option(None, help="closed loop: stop early once this file exists"),
    timeline_step: float = typer.Option(TIMELINE_STEP_S, help="seconds per slice of the summary's timeline", min=0.01),
) -> None:
    import uvloop

    body_list = [line.encode() for line in bodies.read_text().splitlines() if line.strip()]

    async def run() -> dict:
        load = Load(url, build_requests(urlsplit(url).netloc, path, body_list), timeout, honour_retry_after)
        if warmup > 0:
            await load.closed_loop(min(connections, 8), warmup)
        load.record = Record()
        start = time.perf_counter()
        if rate > 0:
            await load.open_loop(rate, seconds, connections)
        else:
            await load.closed_loop(connections, seconds, stop_file)
        return summarise(load.record, rows_per_request, time.perf_counter() - start, timeline_step, load.t0)

    result = uvloop.run(run())
    text = json.dumps(result)
    if out is not None:
        out.write_text(text)
    print(text)


if __name__ == "__main__":
    app()
