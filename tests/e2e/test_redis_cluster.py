"""Redis Cluster end to end: a real 3-master cluster on loopback, publish via the CLI, real uvicorn.

Covers: publish (hash-tagged keys land in one slot), lookup in one round trip to
one shard (INFO commandstats on every node), hot reload to a version published
while serving, and a killed shard -> degraded answers, never a 5xx.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from redis_cluster_support import LocalRedisCluster
from serving_support import REPO, predict, sample_records, uvicorn_server

from service.redis_store import marker_key, vocab_key
from service.testing import TINY_VOCAB, VERSION_A, VERSION_B, TinyBundle, write_tiny_bundle

pytestmark = pytest.mark.e2e
PREFIX = "cluster-e2e:"
TOKEN = "cluster-test-token"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRedisCluster]:
    c = LocalRedisCluster(tmp_path_factory.mktemp("cluster"))
    try:
        c.start()
        yield c
    finally:
        c.stop()


def publish(registry: Path, url: str, version: str) -> None:
    cmd = [sys.executable, "-m", "service.cli", "publish-vocab", "--registry", str(registry)]
    cmd += ["--redis-url", url, "--prefix", PREFIX, "--version", version, "--cluster"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def fresh_records(n: int, tag: str) -> list[dict]:
    """Rows whose item values were never looked up before (so they cannot come from the cache)."""
    rows = sample_records(n, seed=3)
    for i, r in enumerate(rows):
        r["item"] = f"{tag}-{i}"
    return rows


def test_cluster_publish_lookup_reload_and_shard_loss(cluster: LocalRedisCluster, tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    a: TinyBundle = write_tiny_bundle(registry, version=VERSION_A, seed=0, make_current=True)
    b: TinyBundle = write_tiny_bundle(registry, version=VERSION_B, seed=1, make_current=False)
    publish(registry, cluster.url, VERSION_A)

    # Every key of one version sits on the shard owning its hash-tag slot.
    owner_a = cluster.port_of_key(marker_key(PREFIX, VERSION_A))
    assert {cluster.port_of_key(vocab_key(PREFIX, VERSION_A, f)) for f in TINY_VOCAB} == {owner_a}
    with cluster.node(owner_a) as node:
        assert node.hgetall(vocab_key(PREFIX, VERSION_A, "city")) == {"paris": "1", "oslo": "2"}

    env = {
        "DLF_REGISTRY": str(registry),
        "REDIS_URL": cluster.url,
        "DLF_REDIS_CLUSTER": "true",
        "DLF_REDIS_PREFIX": PREFIX,
        "DLF_ADMIN_TOKEN": TOKEN,
        "DLF_REDIS_RETRY_BACKOFF_S": "0.2",
        "DLF_REDIS_SOCKET_TIMEOUT_S": "0.25",
        "DLF_BATCHING_ENABLED": "false",
    }
    with uvicorn_server(env, tmp_path / "service.log") as url:
        records = sample_records(30, seed=11)
        r = predict(url, {"records": records})
        assert r.status_code == 200 and not r.json()["degraded"], r.text
        np.testing.assert_allclose(r.json()["probabilities"], a.reference(records), atol=1e-5)

        # One lookup = one MULTI/EXEC round trip on one shard, one HMGET per categorical field.
        before = cluster.command_calls()
        r = predict(url, {"records": fresh_records(5, "rt")})
        assert r.status_code == 200 and not r.json()["degraded"]
        after = cluster.command_calls()
        delta = {
            port: {
                cmd: after[port].get(cmd, 0) - before[port].get(cmd, 0) for cmd in ("multi", "exec", "hmget")
            }
            for port in after
        }
        assert delta[owner_a] == {"multi": 1, "exec": 1, "hmget": len(TINY_VOCAB)}, delta
        assert all(d == {"multi": 0, "exec": 0, "hmget": 0} for p, d in delta.items() if p != owner_a), delta

        # Hot reload to B, published to the cluster while A is served.
        publish(registry, cluster.url, VERSION_B)
        r = httpx.post(
            f"{url}/admin/reload",
            json={"version": VERSION_B},
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=30,
        )
        assert r.status_code == 200 and r.json()["model_version"] == VERSION_B, r.text
        r = predict(url, {"records": records})
        assert r.status_code == 200 and r.json()["model_version"] == VERSION_B
        assert not r.json()["degraded"]
        np.testing.assert_allclose(r.json()["probabilities"], b.reference(records), atol=1e-5)

        # Kill the shard holding B's vocab: uncached values -> OOV + degraded, cached ones still resolve.
        owner_b = cluster.port_of_key(marker_key(PREFIX, VERSION_B))
        cluster.kill(owner_b)
        statuses = []
        for i in range(8):
            r = predict(url, {"records": fresh_records(3, f"dead-{i}")})
            statuses.append(r.status_code)
            assert r.status_code == 200, r.text
            assert r.json()["degraded"] is True
        cached = predict(url, {"records": records})
        assert cached.status_code == 200
        np.testing.assert_allclose(cached.json()["probabilities"], b.reference(records), atol=1e-5)
        for path in ("/readyz", "/info", "/healthz"):
            assert httpx.get(f"{url}{path}", timeout=10).status_code < 500
        assert statuses == [200] * 8
