"""Feature ids in Redis, shared by all replicas, with an in-process cache in front.

The key layout (one hash per bundle version and field, plus a completeness
marker written last, all of one version under one ``{<version>}`` hash tag) and
its writer ``publish_vocab`` live in ``service.contract``. Because the hash tag
puts one version's keys in one Redis Cluster slot, a request's cache misses are
resolved in ONE round trip to ONE node: a MULTI/EXEC pipeline with an EXISTS on
the marker and one HMGET per field. The same code runs against a single Redis or
a Redis Cluster (``DLF_REDIS_CLUSTER``; ``connect`` picks the client).
When Redis fails the store answers from its cache (misses -> OOV), reports
``degraded`` and retries after a short backoff, so it recovers on its own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException, RedisError

from service.contract import BundleSchema, marker_key, publish_vocab, vocab_key
from service.feature_store import GenerationalCache, Lookup, StoreStatus
from service.metrics import ServiceMetrics
from service.settings import Settings

log = logging.getLogger(__name__)

UNKNOWN = -1  # cached "not in the vocab" (only cached once the version's publish marker was seen)
# RedisClusterException (e.g. "slot not covered" after a shard died) is not a RedisError.
REDIS_FAILURES = (RedisError, RedisClusterException, OSError, asyncio.TimeoutError)


def connect(url: str, timeout_s: float = 0.25, *, cluster: bool = False) -> aioredis.Redis:
    """A client that fails fast (short timeouts, no retries): the cache covers the gap instead.

    ``cluster``: ``url`` names any node of a Redis Cluster; the client discovers the
    others and routes each version's keys to the shard owning its slot.
    """
    if cluster:
        return aioredis.RedisCluster.from_url(  # type: ignore[return-value] - same command API
            url,
            decode_responses=True,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
            require_full_coverage=False,  # a dead shard only degrades the versions it holds
        )
    return aioredis.Redis.from_url(
        url,
        decode_responses=True,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
    )


class RedisFeatureStore:
    """``FeatureStore`` over Redis hashes with an in-process cache per (version, field)."""

    backend = "redis"

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str = "dlf:",
        cache_size: int = 100_000,
        retry_backoff_s: float = 0.5,
        publish_on_start: bool = False,
        metrics: ServiceMetrics | None = None,
        round_trip_timeout_s: float = 1.0,
    ) -> None:
        self.client = client
        # A cluster client may refresh its slot map across several nodes before failing; this bounds
        # the whole lookup so a dead shard costs a request at most this long (then degraded + backoff).
        self.round_trip_timeout_s = round_trip_timeout_s
        self.prefix = prefix
        self.cache = GenerationalCache(cache_size)
        self.retry_backoff_s = retry_backoff_s
        self.publish_on_start = publish_on_start
        self.metrics = metrics
        self._published: set[str] = set()
        self._down_until = 0.0
        self._down = False

    @classmethod
    def from_settings(cls, settings: Settings, metrics: ServiceMetrics | None = None) -> RedisFeatureStore:
        assert settings.redis_url is not None
        return cls(
            connect(settings.redis_url, settings.redis_socket_timeout_s, cluster=settings.redis_cluster),
            prefix=settings.redis_prefix,
            cache_size=settings.feature_cache_size,
            retry_backoff_s=settings.redis_retry_backoff_s,
            publish_on_start=settings.redis_publish_on_start,
            metrics=metrics,
            round_trip_timeout_s=4 * settings.redis_socket_timeout_s,
        )

    async def prepare(self, bundle_dir: Path, schema: BundleSchema) -> None:
        """Check the version's publish marker; publish it when allowed. Never fails on a Redis outage."""
        try:
            if await self.client.exists(marker_key(self.prefix, schema.version)):
                self._published.add(schema.version)
            elif self.publish_on_start:
                counts = await publish_vocab(self.client, bundle_dir, self.prefix)
                log.info("published vocab of %s to Redis: %s", schema.version, counts)
                self._published.add(schema.version)
            else:
                log.warning(
                    "vocab of %s is not published in Redis; run `python -m service.cli publish-vocab`",
                    schema.version,
                )
        except REDIS_FAILURES as exc:
            self._failed(exc)

    def _failed(self, exc: BaseException) -> None:
        self._down_until = time.monotonic() + self.retry_backoff_s
        if self.metrics is not None:
            self.metrics.redis_errors.inc()
        if not self._down:
            log.warning(
                "Redis unavailable (%s: %s); answering from cache, unknown -> OOV", type(exc).__name__, exc
            )
        self._down = True

    def _recovered(self) -> None:
        if self._down:
            log.info("Redis is back")
        self._down = False
        self._down_until = 0.0

    async def lookup(self, version: str, keys: Mapping[str, Collection[str]]) -> Lookup:
        ids: dict[str, dict[str, int]] = {}
        missing: dict[str, list[str]] = {}
        hits = 0
        for name, wanted in keys.items():
            found, absent = self.cache.get_many((version, name), wanted)
            hits += len(found)
            if UNKNOWN in found.values():  # cached "not in the vocab": OOV, so not an id
                found = {k: v for k, v in found.items() if v != UNKNOWN}
            ids[name] = found
            if absent:
                missing[name] = absent
        if self.metrics is not None:
            self.metrics.cache_hits.inc(hits)
            self.metrics.cache_misses.inc(sum(len(v) for v in missing.values()))
        if not missing:
            return Lookup(ids=ids)
        if time.monotonic() < self._down_until:
            return Lookup(ids=ids, degraded=True)
        fields = list(missing)
        try:
            async with (
                asyncio.timeout(self.round_trip_timeout_s),
                self.client.pipeline(transaction=True) as pipe,
            ):
                pipe.exists(marker_key(self.prefix, version))
                for name in fields:
                    pipe.hmget(vocab_key(self.prefix, version, name), missing[name])
                published, *values = await pipe.execute()
        except REDIS_FAILURES as exc:
            self._failed(exc)
            return Lookup(ids=ids, degraded=True)
        self._recovered()
        if not published:
            # Nothing trustworthy to cache: an absent hash would look like "all unknown".
            self._published.discard(version)
            return Lookup(ids=ids, degraded=True)
        self._published.add(version)
        for name, found in zip(fields, values, strict=True):
            resolved = {k: int(v) if v is not None else UNKNOWN for k, v in zip(missing[name], found, strict=True)}
            self.cache.put_many((version, name), resolved)
            ids[name].update((k, v) for k, v in resolved.items() if v != UNKNOWN)
        return Lookup(ids=ids)

    async def status(self, version: str) -> StoreStatus:
        """Reachable + published -> ready; unreachable -> still ready (degraded answers), reported."""
        details: dict[str, Any] = {"prefix": self.prefix, "cache_entries": len(self.cache)}
        try:
            async with asyncio.timeout(self.round_trip_timeout_s):
                published = bool(await self.client.exists(marker_key(self.prefix, version)))
        except REDIS_FAILURES as exc:
            details.update(reachable=False, error=f"{type(exc).__name__}: {exc}")
            return StoreStatus(backend=self.backend, ready=True, details=details)
        details.update(reachable=True, vocab_published=published)
        if not published:
            details["error"] = f"vocab of {version} not published; run `python -m service.cli publish-vocab`"
        return StoreStatus(backend=self.backend, ready=published, details=details)

    async def close(self) -> None:
        await self.client.aclose()
