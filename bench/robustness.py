"""Robustness under load for bench/serving_engine.py: 10 hot reloads, then Redis stopped.

Uses a private redis-server on a free port (never the shared one: stopping it would hurt
everyone else on the machine) and a private registry holding the benchmark bundle twice
(the second copy under another version id), so reloads really swap sessions and vocab.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "e2e"))
from serving_support import RedisServer  # noqa: E402

TOKEN = "bench-admin-token"


def clone_version(bundle: Path, registry: Path) -> tuple[str, str]:
    """Copy ``bundle`` into ``registry`` twice: as itself and under a sibling version id."""
    a = bundle.name
    b = a[:-8] + ("0" if a[-8] != "0" else "1") + a[-7:]
    for version in (a, b):
        target = registry / version
        shutil.copytree(bundle, target)
        schema = json.loads((target / "schema.json").read_text())
        schema["version"] = version
        (target / "schema.json").write_text(json.dumps(schema))
    (registry / "CURRENT").write_text(a + "\n")
    return a, b


def _background_load(url: str, bodies: Path, seconds: float, out: Path) -> subprocess.Popen:
    """8 connections x 10 rows until ``seconds`` pass or ``<out>.stop`` appears."""
    cmd = [sys.executable, "-m", "bench.load_client", "--url", url, "--bodies", str(bodies)]
    cmd += ["--rows-per-request", "10", "--connections", "8", "--seconds", str(seconds), "--warmup", "0.5"]
    cmd += ["--out", str(out), "--timeout", "15", "--stop-file", str(out.with_suffix(".stop"))]
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _finish(proc: subprocess.Popen, out: Path) -> dict[str, Any]:
    _, err = proc.communicate(timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"load client failed: {err.decode()[-2000:]}")
    result = json.loads(out.read_text())
    result.pop("cdf_ms", None)
    return result


def group_settled_s(url: str, version: str, agree: int = 8, timeout_s: float = 10.0) -> float | None:
    """Seconds until ``agree`` answers of ``/info`` in a row, each on a new connection (so
    ``SO_REUSEPORT`` spreads them over ``serve``'s processes), report ``version``; None on timeout.
    Without it the next reload could reach a process that had not followed this one yet and
    answer "unchanged" (it already serves that version): correct, but then not a swap."""
    start = time.monotonic()
    streak = 0
    while time.monotonic() - start < timeout_s:
        served = httpx.get(f"{url}/info", timeout=5, headers={"Connection": "close"}).json().get("model_version")
        streak = streak + 1 if served == version else 0
        if streak >= agree:
            return round(time.monotonic() - start, 3)
        time.sleep(0.02)
    return None


def reloads_and_redis_outage(
    bundle: Path,
    work: Path,
    bodies: Path,
    seconds: float,
    server: Callable,
    load: Callable,
    processes: int = 0,
) -> dict[str, Any]:
    work.mkdir(parents=True, exist_ok=True)
    registry = work / "registry"
    a, b = clone_version(bundle, registry)
    redis = RedisServer(work)
    redis.start()
    try:
        for version in (a, b):
            cmd = [sys.executable, "-m", "service.cli", "publish-vocab", "--registry", str(registry)]
            cmd += ["--version", version, "--redis-url", redis.url, "--prefix", "robust:"]
            subprocess.run(cmd, cwd=REPO, check=True, capture_output=True, timeout=300)
        env = {
            "DLF_REGISTRY": str(registry),
            "REDIS_URL": redis.url,
            "DLF_REDIS_PREFIX": "robust:",
            "DLF_ADMIN_TOKEN": TOKEN,
            "DLF_RELOAD_PUBSUB": "false",
        }
        cmd = [sys.executable, "-m", "service.cli", "serve", "--host", "127.0.0.1", "--log-level", "warning"]
        cmd += ["--processes", str(processes)] if processes else []
        with server(cmd, env, work / "service.log") as url:
            deadline = time.monotonic() + 120
            while httpx.get(f"{url}/readyz", timeout=2).status_code != 200:
                if time.monotonic() > deadline:
                    raise RuntimeError("robustness service not ready")
                time.sleep(0.2)
            duration = max(seconds, 8.0)
            # 1. ten hot reloads while 8 connections send 10-row requests
            proc = _background_load(url, bodies, 600, work / "reloads.json")
            time.sleep(1.0)
            answers = []
            headers = {"Authorization": f"Bearer {TOKEN}"}
            for i in range(10):
                target = b if i % 2 == 0 else a
                r = httpx.post(f"{url}/admin/reload", json={"version": target}, headers=headers, timeout=120)
                answers.append([r.status_code, r.json().get("result"), r.json().get("model_version")])
                answers[-1].append(group_settled_s(url, target))
                time.sleep(0.5)
            load_outlived_reloads = proc.poll() is None
            (work / "reloads.stop").touch()
            reloads = _finish(proc, work / "reloads.json")
            reloads["load_ran_through_all_reloads"] = load_outlived_reloads
            reloads["reload_answers"] = answers
            # 2. Redis stopped for a while under the same load, then started again
            proc = _background_load(url, bodies, duration, work / "outage.json")
            time.sleep(duration / 4)
            redis.stop()
            time.sleep(duration / 3)
            record = json.loads(bodies.read_text().splitlines()[0])["records"][0]
            unseen = {k: f"never-seen-{i}" for i, k in enumerate(record)}  # misses must ask Redis
            probe = httpx.post(f"{url}/predict", json={"records": [unseen]}, timeout=10)
            degraded = [probe.status_code, probe.json().get("degraded")]
            redis.start()
            outage = _finish(proc, work / "outage.json")
            outage["degraded_answer_seen"] = degraded
            metrics = httpx.get(f"{url}/metrics").text
            outage["redis_errors"] = sum(
                float(line.split()[1])
                for line in metrics.splitlines()
                if line.startswith("dlf_redis_errors_total")
            )
    finally:
        redis.stop()
    return {"reloads": reloads, "redis_outage": outage}
