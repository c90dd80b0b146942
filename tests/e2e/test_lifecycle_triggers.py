"""Reload triggers end to end: Redis pub/sub notice (private redis-server), polling CURRENT, shadow mode.

The pub/sub test uses its own redis-server on a free port so its channel and
vocab markers are isolated from everything else using the shared Redis.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from serving_support import REPO, RedisServer, predict, publish_with_cli, sample_records, uvicorn_server

from service.contract import set_current
from service.testing import VERSION_A, VERSION_B, TinyBundle, write_tiny_bundle

pytestmark = pytest.mark.e2e

TOKEN = "e2e-shadow-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PREFIX = "life:"
RECORDS = sample_records(5, seed=3)


def make_registry(root: Path) -> dict[str, TinyBundle]:
    a = write_tiny_bundle(root, version=VERSION_A, seed=0, make_current=True)
    b = write_tiny_bundle(root, version=VERSION_B, seed=1, make_current=False)
    return {VERSION_A: a, VERSION_B: b}


def wait_for_version(url: str, version: str, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        body = predict(url, {"records": RECORDS}).json()
        if body["model_version"] == version or time.monotonic() > deadline:
            return body
        time.sleep(0.05)


def test_pubsub_notice_reloads(private_redis: RedisServer, tmp_path: Path) -> None:
    bundles = make_registry(tmp_path / "registry")
    registry = bundles[VERSION_A].registry
    publish_with_cli(registry, private_redis.url, PREFIX)  # CURRENT = A
    env = {"DLF_REGISTRY": str(registry), "REDIS_URL": private_redis.url, "DLF_REDIS_PREFIX": PREFIX}
    with uvicorn_server(env, tmp_path / "pubsub.log") as url, private_redis.client() as r:
        deadline = time.monotonic() + 10
        while r.pubsub_numsub(f"{PREFIX}reload")[0][1] < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        # B's vocab is not published yet: the notice is refused and A keeps answering
        r.publish(f"{PREFIX}reload", json.dumps({"version": VERSION_B}))
        time.sleep(0.5)
        assert predict(url, {"records": RECORDS}).json()["model_version"] == VERSION_A
        assert 'dlf_reloads_total{result="refused"} 1.0' in httpx.get(f"{url}/metrics").text
        # publish B's vocab first, move CURRENT, then notify (what `retrain` does)
        out = json.loads(publish_with_cli_version(registry, private_redis.url, VERSION_B))
        assert out["version"] == VERSION_B
        set_current(registry, VERSION_B, "test")
        assert r.publish(f"{PREFIX}reload", json.dumps({"version": VERSION_B})) == 1
        body = wait_for_version(url, VERSION_B)
        assert body["model_version"] == VERSION_B
        np.testing.assert_allclose(body["probabilities"], bundles[VERSION_B].reference(RECORDS), atol=1e-5)
        assert httpx.get(f"{url}/info").json()["lifecycle"]["last_reload"]["source"] == "pubsub"


def publish_with_cli_version(registry: Path, redis_url: str, version: str) -> str:
    """``publish-vocab --version``: publish a version that is not CURRENT (yet)."""
    cmd = [sys.executable, "-m", "service.cli", "publish-vocab", "--registry", str(registry)]
    cmd += ["--redis-url", redis_url, "--prefix", PREFIX, "--version", version]
    done = subprocess.run(
        cmd, env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_polling_follows_current(tmp_path: Path) -> None:
    bundles = make_registry(tmp_path / "registry")
    registry = bundles[VERSION_A].registry
    env = {"DLF_REGISTRY": str(registry), "DLF_RELOAD_POLL_SECONDS": "0.2"}
    with uvicorn_server(env, tmp_path / "poll.log") as url:
        assert predict(url, {"records": RECORDS}).json()["model_version"] == VERSION_A
        set_current(registry, VERSION_B, "test")
        body = wait_for_version(url, VERSION_B)
        assert body["model_version"] == VERSION_B
        np.testing.assert_allclose(body["probabilities"], bundles[VERSION_B].reference(RECORDS), atol=1e-5)
        assert httpx.get(f"{url}/info").json()["lifecycle"]["last_reload"]["source"] == "poll"


def test_shadow_mode_metrics_and_info(tmp_path: Path) -> None:
    bundles = make_registry(tmp_path / "registry")
    env = {"DLF_REGISTRY": str(bundles[VERSION_A].registry), "DLF_ADMIN_TOKEN": TOKEN}
    with uvicorn_server(env, tmp_path / "shadow.log") as url:
        r = httpx.post(f"{url}/admin/shadow", json={"version": VERSION_B, "sample_rate": 1.0}, headers=AUTH)
        assert r.status_code == 200, r.text
        n = 8
        for _ in range(n):
            body = predict(url, {"records": RECORDS}).json()
            assert body["model_version"] == VERSION_A
        live = bundles[VERSION_A].reference(RECORDS)
        shadow = bundles[VERSION_B].reference(RECORDS)
        deadline = time.monotonic() + 10
        while (info := httpx.get(f"{url}/info").json())["shadow"]["rows_compared"] < n * len(RECORDS):
            assert time.monotonic() < deadline, info["shadow"]
            time.sleep(0.05)
        s = info["shadow"]
        assert s["rows_compared"] == n * len(RECORDS) and s["errors"] == 0
        assert s["mean_abs_diff"] == pytest.approx(np.abs(live - shadow).mean(), abs=1e-5)
        assert s["mean_live_probability"] == pytest.approx(live.mean(), abs=1e-5)
        assert s["mean_shadow_probability"] == pytest.approx(shadow.mean(), abs=1e-5)
        assert s["decision_agreement"] == pytest.approx(((live >= 0.5) == (shadow >= 0.5)).mean())
        text = httpx.get(f"{url}/metrics").text
        m = re.search(rf'dlf_shadow_comparisons_total{{version="{VERSION_B}"}} (\S+)', text)
        assert m is not None and float(m.group(1)) == n * len(RECORDS)
        assert f'dlf_shadow_abs_diff_count{{version="{VERSION_B}"}} {float(n * len(RECORDS))}' in text
        assert httpx.delete(f"{url}/admin/shadow", headers=AUTH).status_code == 200
        assert httpx.get(f"{url}/info").json()["shadow"] is None
