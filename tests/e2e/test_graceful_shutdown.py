"""SIGTERM to a real uvicorn under load: readiness flips, requests in flight finish, 0 fail.

A load balancer is played by the test: it sends requests while the last
/readyz probe said ready and stops sending new ones once a probe says 503
(what nginx-plus, Envoy or a Kubernetes Service do after readiness fails).
Every request it did send must come back 200: none reset, none lost.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from serving_support import REPO, free_port, sample_records

from service.testing import write_tiny_bundle

pytestmark = pytest.mark.e2e

GRACE_S = 1.5
CLIENTS = 6


def test_sigterm_under_load_fails_no_request(tmp_path: Path) -> None:
    write_tiny_bundle(tmp_path / "registry")
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "DLF_REGISTRY": str(tmp_path / "registry"),
        "DLF_SHUTDOWN_GRACE_S": str(GRACE_S),
        "DLF_MAX_WAIT_MS": "5",  # requests spend time in the batcher: some are in flight at SIGTERM
    }
    env.pop("REDIS_URL", None)
    log_path = tmp_path / "uvicorn.log"
    cmd = [sys.executable, "-m", "uvicorn", "--factory", "service.app:app_factory"]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--timeout-graceful-shutdown", "20"]
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    try:
        _run_load_and_terminate(proc, port, log_path)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def _get(port: int, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    finally:
        conn.close()


def _run_load_and_terminate(proc: subprocess.Popen, port: int, log_path: Path) -> None:
    deadline = time.monotonic() + 40
    while True:
        try:
            if _get(port, "/readyz") == 200:
                break
        except OSError:
            pass
        assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()
        time.sleep(0.1)

    routable = threading.Event()
    routable.set()
    readiness_log: list[tuple[float, int]] = []
    results: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()
    body = json.dumps({"records": sample_records(4, seed=3)})

    def probe() -> None:  # the balancer's readiness probe, every 100 ms
        while not stop.is_set():
            try:
                status = _get(port, "/readyz")
            except OSError:
                status = -1
            readiness_log.append((time.monotonic(), status))
            if status != 200:
                routable.clear()
            time.sleep(0.1)

    def client() -> None:  # keep-alive connection; reconnects when the server says Connection: close
        conn = None
        while routable.is_set() and not stop.is_set():
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            try:
                conn.request("POST", "/predict", body=body, headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                resp.read()
                outcome = str(resp.status)
                if resp.getheader("connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except OSError as exc:
                outcome = f"{type(exc).__name__}: {exc}"
                conn.close()
                conn = None
            with lock:
                results.append(outcome)
        if conn is not None:
            conn.close()

    threads = [threading.Thread(target=probe)] + [threading.Thread(target=client) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    with lock:
        before = len(results)
    sent_at = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        rc = proc.wait(timeout=30)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    exited_at = time.monotonic()

    failed = [r for r in results if r != "200"]
    assert before > 0, "no load before SIGTERM"
    assert failed == [], f"{len(failed)} of {len(results)} requests failed: {sorted(set(failed))}"
    flips = [t for t, status in readiness_log if t > sent_at and status == 503]
    assert flips, f"/readyz never answered 503 after SIGTERM: {readiness_log[-10:]}"
    assert flips[0] - sent_at < GRACE_S, "readiness flipped only after the grace period"
    assert exited_at - sent_at >= GRACE_S, "the process exited before the grace period was over"
    assert rc in (0, -signal.SIGTERM), f"uvicorn exited with {rc}:\n{log_path.read_text()}"
    assert "SIGTERM: not ready any more" in log_path.read_text()
