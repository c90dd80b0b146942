"""Redis feature store end to end: real uvicorn processes, real Redis, publish via the CLI.

Round-trip counting and the outage use a private redis-server on a free port
(INFO commandstats is server-wide, and killing the shared Redis would disturb
other tests); backend equality uses the shared Redis at 6379 under a unique prefix.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import redis
from serving_support import (
    SHARED_REDIS,
    RedisServer,
    predict,
    publish_with_cli,
    sample_records,
    uvicorn_server,
)

from service.testing import TINY_VOCAB, TinyBundle, write_tiny_bundle

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> TinyBundle:
    return write_tiny_bundle(tmp_path_factory.mktemp("registry"))


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="module")
def redis_service(bundle: TinyBundle, private_redis: RedisServer, logs: Path) -> Iterator[str]:
    prefix = "e2e:"
    out = json.loads(publish_with_cli(bundle.registry, private_redis.url, prefix))
    assert out["fields"] == {k: len(v) for k, v in TINY_VOCAB.items()}
    env = {
        "DLF_REGISTRY": str(bundle.registry),
        "REDIS_URL": private_redis.url,
        "DLF_REDIS_PREFIX": prefix,
        "DLF_REDIS_RETRY_BACKOFF_S": "0.2",
        "DLF_REDIS_SOCKET_TIMEOUT_S": "0.25",
    }
    with uvicorn_server(env, logs / "redis-service.log") as url:
        yield url


def test_redis_and_embedded_backends_agree(bundle: TinyBundle, logs: Path) -> None:
    prefix = f"dlf-e2e-{uuid.uuid4().hex[:10]}:"
    shared = f"{SHARED_REDIS}/0"
    try:
        publish_with_cli(bundle.registry, shared, prefix)
        records = sample_records(40, seed=7)
        env = {"DLF_REGISTRY": str(bundle.registry)}
        with uvicorn_server(env, logs / "embedded.log") as embedded:
            expected = predict(embedded, {"records": records}).json()
        with uvicorn_server(
            {**env, "REDIS_URL": shared, "DLF_REDIS_PREFIX": prefix}, logs / "shared.log"
        ) as url:
            assert httpx.get(f"{url}/info").json()["feature_store"] == "redis"
            got = predict(url, {"records": records}).json()
            again = predict(url, {"records": records}).json()  # now from the LRU cache
    finally:
        client = redis.Redis.from_url(shared)
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
        client.close()
    assert expected["oov_fields"]  # the sample does contain unknown values
    for body in (got, again):
        assert body["probabilities"] == expected["probabilities"]
        assert body["oov_fields"] == expected["oov_fields"] and body["degraded"] is False


def test_one_pipelined_round_trip_for_misses_none_when_cached(
    redis_service: str, private_redis: RedisServer, bundle: TinyBundle
) -> None:
    records = [
        {"user": "u1", "item": 266, "daytime": "night", "city": "paris", "price": 1, "rating": 3},
        {"user": "u1", "item": "new-item", "daytime": "night", "city": "paris", "price": 2, "rating": 4},
    ]
    before = private_redis.command_calls()
    first = predict(redis_service, {"records": records})
    middle = private_redis.command_calls()
    second = predict(redis_service, {"records": records})
    after = private_redis.command_calls()
    assert first.status_code == second.status_code == 200
    assert first.json()["probabilities"] == second.json()["probabilities"]
    np.testing.assert_allclose(first.json()["probabilities"], bundle.reference(records), atol=1e-6)

    def delta(a: dict[str, int], b: dict[str, int], cmd: str) -> int:
        return b.get(cmd, 0) - a.get(cmd, 0)

    # misses: ONE MULTI/EXEC transaction holding one HMGET per categorical field
    assert delta(before, middle, "exec") == 1 and delta(before, middle, "multi") == 1
    assert delta(before, middle, "hmget") == len(TINY_VOCAB)
    assert delta(before, middle, "hget") == 0 and delta(before, middle, "hgetall") == 0
    # everything cached (unknown "new-item" included): no Redis traffic at all
    for cmd in ("exec", "multi", "hmget", "exists"):
        assert delta(middle, after, cmd) == 0, cmd


def _metric(url: str, name: str) -> float:
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def test_redis_outage_degrades_then_recovers(
    redis_service: str, private_redis: RedisServer, bundle: TinyBundle
) -> None:
    cached = [{"user": "u1", "item": 266, "daytime": "night", "city": "paris", "price": 5, "rating": 2}]
    assert predict(redis_service, {"records": cached}).json()["degraded"] is False  # warms the cache
    private_redis.stop()
    try:
        fresh = [{"user": "u2", "item": 267, "daytime": "morning", "city": "oslo", "price": 0.5, "rating": 1}]
        r = predict(redis_service, {"records": fresh})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["degraded"] is True
        # u2 / 267 / morning / oslo were never looked up in this module: all OOV while Redis is down
        as_oov = [{**fresh[0], **{k: "unknown" for k in TINY_VOCAB}}]
        np.testing.assert_allclose(body["probabilities"], bundle.reference(as_oov), atol=1e-6)
        assert body["oov_fields"] == {k: 1 for k in TINY_VOCAB}
        # values already cached are still answered exactly, not degraded
        r = predict(redis_service, {"records": cached})
        assert r.json()["degraded"] is False
        np.testing.assert_allclose(r.json()["probabilities"], bundle.reference(cached), atol=1e-6)
        ready = httpx.get(f"{redis_service}/readyz")
        assert ready.status_code == 200 and ready.json()["feature_store"]["reachable"] is False
        assert _metric(redis_service, "dlf_redis_errors_total") >= 1
        assert _metric(redis_service, "dlf_degraded_responses_total") >= 1
    finally:
        private_redis.start()
    publish_with_cli(bundle.registry, private_redis.url, "e2e:")  # no persistence: the restart lost the data
    deadline = time.monotonic() + 15
    while True:
        body = predict(redis_service, {"records": fresh}).json()
        if not body["degraded"] or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert body["degraded"] is False, "service did not recover after Redis came back"
    np.testing.assert_allclose(body["probabilities"], bundle.reference(fresh), atol=1e-6)
    assert body["oov_fields"] == {}
