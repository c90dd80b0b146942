"""The impression log: what was served, appended to a Redis Stream off the response path.

``/predict`` gives every row an impression id ``<batch>-<row>`` (``batch`` is a
fresh random 32-hex-digit id per request) and hands the request to ``ImpressionLogger.log``,
which only appends to an in-memory queue (or drops and counts). A background
task writes queued requests in one pipeline per batch (it lingers up to
``linger_s`` for more requests, so a round trip carries many):

- ``XADD <prefix>impressions MAXLEN ~ N * b <batch> v <version> t <ms> p <json probs> rows <json records>``
  (one entry per request; ``collect`` reads it in order);
- ``SET <prefix>imp:{<batch>} <json {v, t, p}> EX ttl`` so ``/feedback`` can tell a
  known impression from an unknown one and knows its model version and probability.

Redis failing never reaches the response: the batch is dropped and counted
(``dlf_impressions_dropped_total{reason}``) and, for ``retry_backoff_s``, new
impressions are dropped at once instead of queueing behind a dead connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from service.contract import impression_key, impressions_stream_key
from service.ids import random_hex
from service.metrics import ServiceMetrics
from service.redis_store import REDIS_FAILURES, connect
from service.settings import Settings

log = logging.getLogger(__name__)

stream_key = impressions_stream_key  # short name used by the service and its tests


# KEYS: the stream, then imp:{batch} of each request; ARGV: maxlen, ttl, then per request
# batch, version, ms, probabilities JSON, rows JSON, imp:{batch} record. The same two writes
# as the pipeline path (XADD + SET EX), in one round trip and one reply.
WRITE_SCRIPT = """
local maxlen, ttl = ARGV[1], ARGV[2]
for i = 2, #KEYS do
  local a = 3 + (i - 2) * 6
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, '*', 'b', ARGV[a], 'v', ARGV[a + 1],
             't', ARGV[a + 2], 'p', ARGV[a + 3], 'rows', ARGV[a + 4])
  redis.call('SET', KEYS[i], ARGV[a + 5], 'EX', ttl)
end
return #KEYS - 1
"""


WRITE_BYTES = 512 * 1024  # payload per write (one script call or pipeline): keeps each one short


def new_impressions(n_rows: int) -> tuple[str, list[str]]:
    """A fresh batch id and one impression id per row (``<batch>-<row>``)."""
    batch = random_hex(16)  # 128 random bits, like uuid4's 122
    return batch, [f"{batch}-{i}" for i in range(n_rows)]


def _dumps(value: Any) -> bytes:
    """orjson (the writer's main cost, ~10x faster than json); json for what it refuses (ints > 64 bit)."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value, default=str).encode()


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class _Entry:
    """One request, already serialised: bytes are not tracked by the cyclic GC (see ``log``)."""

    batch: str
    version: str
    at_ms: int
    n_rows: int
    rows: bytes
    probabilities: bytes


class ImpressionLogger:
    """Bounded queue + one writer task; ``log`` is O(1) and never raises or waits."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str = "dlf:",
        maxlen: int = 1_000_000,
        ttl_s: int = 2 * 24 * 3600,
        sample_rate: float = 1.0,
        max_pending: int = 10_000,
        retry_backoff_s: float = 1.0,
        write_batch: int = 256,
        linger_s: float = 0.05,
        metrics: ServiceMetrics | None = None,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.stream = stream_key(prefix)
        self.maxlen = maxlen
        self.ttl_s = ttl_s
        self.sample_rate = sample_rate
        self.max_pending = max_pending
        self.retry_backoff_s = retry_backoff_s
        self.write_batch = write_batch
        self.metrics = metrics
        self._queue: deque[_Entry] = deque()
        self._wakeup = asyncio.Event()
        self._urgent = asyncio.Event()  # set by flush() and by a full write batch: write now
        self.linger_s = linger_s
        self._task: asyncio.Task[None] | None = None
        self._down_until = 0.0
        self._down = False
        self._enqueued = 0  # sequence numbers, so flush() can wait for what was queued before it
        self._done = 0
        self._done_changed = asyncio.Event()
        # Standalone Redis: one script call per batch instead of two commands per request; redis-py's
        # per-command pipeline work (packing, a parsed reply each) was ~12 % of the event loop's time
        # at 1 row x 32 connections (py-spy). A cluster spreads the keys over slots: pipeline there.
        self._script = None if isinstance(client, RedisCluster) else client.register_script(WRITE_SCRIPT)

    @classmethod
    def from_settings(cls, settings: Settings, metrics: ServiceMetrics | None) -> ImpressionLogger | None:
        """None when impression logging is off or there is no Redis to log to."""
        url = settings.impressions_redis_url or settings.redis_url
        if not settings.impressions_enabled or url is None:
            return None
        return cls(
            connect(url, settings.redis_socket_timeout_s, cluster=settings.redis_cluster),
            prefix=settings.redis_prefix,
            maxlen=settings.impressions_maxlen,
            ttl_s=settings.impressions_ttl_s,
            sample_rate=settings.impressions_sample_rate,
            max_pending=settings.impressions_max_pending,
            retry_backoff_s=settings.redis_retry_backoff_s,
            metrics=metrics,
        )

    # --- request path -------------------------------------------------------------

    def log(
        self, batch: str, version: str, rows: Sequence[dict[str, Any]], probabilities: list[float]
    ) -> bool:
        """Queue one request's impressions; False when sampled out or dropped (counted either way)."""
        n = len(probabilities)
        if self.sample_rate < 1.0 and random.random() >= self.sample_rate:
            self._count("sampled", n)
            return False
        if time.monotonic() < self._down_until:
            self._count("redis_down", n)
            return False
        if len(self._queue) >= self.max_pending:
            self._count("queue_full", n)
            return False
        # Serialised here (orjson: ~0.3 us per row) rather than in the writer: queued row dicts
        # outlive their request, get promoted to older GC generations and made every collection
        # dearer (measured: +25 % CPU per row at 100 rows x 8 connections); bytes are not tracked.
        entry = _Entry(batch, version, now_ms(), n, _dumps(rows), orjson.dumps(probabilities))
        self._queue.append(entry)
        self._enqueued += 1
        self._wakeup.set()
        if len(self._queue) >= self.write_batch:
            self._urgent.set()
        return True

    def _count(self, reason: str, rows: int) -> None:
        if self.metrics is None:
            return
        if reason == "sampled":
            self.metrics.loop.impressions_sampled_out.inc(rows)
        elif reason == "logged":
            self.metrics.loop.impressions_logged.inc(rows)
        else:
            self.metrics.loop.impressions_dropped.labels(reason=reason).inc(rows)

    # --- writer -------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._writer(), name="dlf-impression-log")

    async def stop(self, drain_timeout_s: float = 2.0) -> None:
        """Write what is queued (bounded wait), then stop the writer and close the client."""
        if self._task is not None:
            with contextlib.suppress(TimeoutError):
                await self.flush(drain_timeout_s)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._queue:
            self._count("shutdown", sum(e.n_rows for e in self._queue))
            self._queue.clear()
        await self.client.aclose()

    @property
    def pending(self) -> int:
        """Requests queued or being written right now."""
        return self._enqueued - self._done

    async def flush(self, timeout_s: float = 1.0) -> None:
        """Wait until everything queued before this call was written or dropped (TimeoutError after)."""
        target = self._enqueued
        self._urgent.set()  # no lingering for company while someone waits
        async with asyncio.timeout(timeout_s):
            while self._done < target:
                self._done_changed.clear()
                await self._done_changed.wait()

    async def _writer(self) -> None:
        while True:
            if not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if len(self._queue) < self.write_batch and not self._urgent.is_set():
                # linger: one round trip for many requests costs less CPU than one per request
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._urgent.wait(), self.linger_s)
            self._urgent.clear()
            batch = self._take_batch()
            try:
                await self._write(batch)
            except Exception:  # a bug must not stop the writer: drop this batch, keep serving
                log.exception("impression log: batch not written")
                self._count("error", sum(e.n_rows for e in batch))
            self._done += len(batch)
            self._done_changed.set()

    def _take_batch(self) -> list[_Entry]:
        """Oldest requests, up to ``write_batch`` of them and ``WRITE_BYTES`` of payload (at least one).

        Bounded by bytes too: a backlog of 1000-row requests made one write of tens of MB, which
        held the event loop while it was packed and Redis (one script call) while it ran.
        """
        batch: list[_Entry] = []
        size = 0
        while self._queue and len(batch) < self.write_batch:
            entry = self._queue[0]
            cost = len(entry.rows) + 2 * len(entry.probabilities)
            if batch and size + cost > WRITE_BYTES:
                break
            batch.append(self._queue.popleft())
            size += cost
        return batch

    async def _write(self, entries: list[_Entry]) -> None:
        rows = sum(e.n_rows for e in entries)
        if time.monotonic() < self._down_until:
            self._count("redis_down", rows)
            return
        try:
            if self._script is not None:
                await self._write_script(entries)
            else:
                await self._write_pipeline(entries)
        except REDIS_FAILURES as exc:
            self._down_until = time.monotonic() + self.retry_backoff_s
            if not self._down:
                log.warning("impression log: Redis unavailable (%s: %s); dropping", type(exc).__name__, exc)
            self._down = True
            self._count("redis_error", rows)
            if self.metrics is not None:
                self.metrics.redis_errors.inc()
            return
        if self._down:
            log.info("impression log: Redis is back")
        self._down = False
        self._count("logged", rows)

    @staticmethod
    def _record(e: _Entry) -> bytes:
        """``imp:{batch}``'s value: ``{"v": version, "t": ms, "p": [probabilities]}``."""
        return orjson.dumps({"v": e.version, "t": e.at_ms})[:-1] + b',"p":' + e.probabilities + b"}"

    async def _write_script(self, entries: list[_Entry]) -> None:
        """One EVALSHA for the whole batch (standalone Redis): see ``WRITE_SCRIPT``."""
        keys = [self.stream] + [impression_key(self.prefix, e.batch) for e in entries]
        args: list[bytes | str | int] = [self.maxlen, self.ttl_s]
        for e in entries:
            args += [e.batch, e.version, e.at_ms, e.probabilities, e.rows, self._record(e)]
        await self._script(keys=keys, args=args)

    async def _write_pipeline(self, entries: list[_Entry]) -> None:
        """XADD + SET per request in one pipeline (Redis Cluster: the keys live in different slots)."""
        async with self.client.pipeline(transaction=False) as pipe:
            for e in entries:
                pipe.xadd(
                    self.stream,
                    {"b": e.batch, "v": e.version, "t": e.at_ms, "p": e.probabilities, "rows": e.rows},
                    maxlen=self.maxlen,
                    approximate=True,
                )
                pipe.set(impression_key(self.prefix, e.batch), self._record(e), ex=self.ttl_s)
            await pipe.execute()
