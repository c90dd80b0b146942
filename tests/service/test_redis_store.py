"""Redis backend against the real Redis at 127.0.0.1:6379 (own key prefix per test, cleaned up)."""

from __future__ import annotations

import json
import socket

import pytest
import redis.asyncio as aioredis

from service.contract import load_schema
from service.metrics import ServiceMetrics
from service.redis_store import RedisFeatureStore, connect, marker_key, publish_vocab, vocab_key
from service.testing import TINY_VOCAB, VERSION_A, TinyBundle

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
async def client():
    c = connect(REDIS_URL, timeout_s=2.0)
    try:
        await c.ping()
    except Exception as exc:  # pragma: no cover - environment problem, not a code path
        pytest.fail(f"Redis at {REDIS_URL} is required for these tests: {exc}")
    yield c
    await c.aclose()


async def test_publish_writes_hashes_and_marker(
    client: aioredis.Redis, bundle_a: TinyBundle, redis_prefix: str
):
    counts = await publish_vocab(client, bundle_a.path, redis_prefix, chunk_size=2)
    assert counts == {name: len(v) for name, v in TINY_VOCAB.items()}
    for name, vocab in TINY_VOCAB.items():
        stored = await client.hgetall(vocab_key(redis_prefix, VERSION_A, name))
        assert stored == {v: str(i + 1) for i, v in enumerate(vocab)}
    marker = json.loads(await client.get(marker_key(redis_prefix, VERSION_A)))
    assert marker["fields"] == counts
    # publishing again is idempotent and leaves no temporary keys behind
    await publish_vocab(client, bundle_a.path, redis_prefix)
    keys = {k async for k in client.scan_iter(match=f"{redis_prefix}*")}
    assert keys == {vocab_key(redis_prefix, VERSION_A, n) for n in TINY_VOCAB} | {
        marker_key(redis_prefix, VERSION_A)
    }


async def test_lookup_uses_cache_after_first_round_trip(
    client: aioredis.Redis, bundle_a: TinyBundle, redis_prefix: str
) -> None:
    await publish_vocab(client, bundle_a.path, redis_prefix)
    metrics = ServiceMetrics()
    store = RedisFeatureStore(connect(REDIS_URL), prefix=redis_prefix, cache_size=100, metrics=metrics)
    await store.prepare(bundle_a.path, load_schema(bundle_a.path))
    assert (await store.status(VERSION_A)).ready
    keys = {"item": {"266", "nope"}, "city": {"oslo"}}
    first = await store.lookup(VERSION_A, keys)
    assert first.ids == {"item": {"266": 1}, "city": {"oslo": 2}} and not first.degraded
    assert metrics.registry.get_sample_value("dlf_feature_cache_misses_total") == 3
    # delete the data in Redis: the second answer (unknown "nope" included) must come from the cache
    await client.delete(
        vocab_key(redis_prefix, VERSION_A, "item"), vocab_key(redis_prefix, VERSION_A, "city")
    )
    second = await store.lookup(VERSION_A, keys)
    assert second.ids == first.ids and not second.degraded
    assert metrics.registry.get_sample_value("dlf_feature_cache_hits_total") == 3
    await store.close()


async def test_unpublished_version_is_degraded_and_not_cached(
    client: aioredis.Redis, bundle_a: TinyBundle, redis_prefix: str
) -> None:
    store = RedisFeatureStore(connect(REDIS_URL), prefix=redis_prefix)
    await store.prepare(bundle_a.path, load_schema(bundle_a.path))
    status = await store.status(VERSION_A)
    assert not status.ready and "publish-vocab" in status.details["error"]
    result = await store.lookup(VERSION_A, {"item": {"266"}})
    assert result.degraded and result.ids == {"item": {}}
    assert len(store.cache) == 0
    await publish_vocab(client, bundle_a.path, redis_prefix)
    result = await store.lookup(VERSION_A, {"item": {"266"}})
    assert not result.degraded and result.ids == {"item": {"266": 1}}
    await store.close()


async def test_publish_on_start(client: aioredis.Redis, bundle_a: TinyBundle, redis_prefix: str) -> None:
    store = RedisFeatureStore(connect(REDIS_URL), prefix=redis_prefix, publish_on_start=True)
    await store.prepare(bundle_a.path, load_schema(bundle_a.path))
    assert await client.exists(marker_key(redis_prefix, VERSION_A))
    assert (await store.status(VERSION_A)).ready
    await store.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_unreachable_redis_degrades_without_raising(bundle_a: TinyBundle) -> None:
    metrics = ServiceMetrics()
    store = RedisFeatureStore(
        connect(f"redis://127.0.0.1:{closed_port()}/0", timeout_s=0.2), retry_backoff_s=60, metrics=metrics
    )
    await store.prepare(bundle_a.path, load_schema(bundle_a.path))  # must not raise
    store.cache.put_many((VERSION_A, "item"), {"266": 1})
    result = await store.lookup(VERSION_A, {"item": {"266", "267"}})
    assert result.degraded and result.ids == {"item": {"266": 1}}
    # prepare failed first and opened the backoff window: the lookup did not even try Redis
    assert metrics.registry.get_sample_value("dlf_redis_errors_total") == 1
    store.retry_backoff_s = 0.0
    store._down_until = 0.0
    result = await store.lookup(VERSION_A, {"item": {"267"}})
    assert result.degraded and result.ids == {"item": {}}
    assert metrics.registry.get_sample_value("dlf_redis_errors_total") == 2
    status = await store.status(VERSION_A)
    assert status.ready and status.details["reachable"] is False
    await store.close()
