"""`serve --processes 2`: one port, both processes answer, /metrics adds them up, a reload reaches both."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import httpx
from serving_support import REPO, free_port

from service.batcher import usable_cores
from service.testing import VERSION_A, VERSION_B, write_tiny_bundle

TOKEN = "group-token"
ROW = {"user": "u1", "item": 266, "daytime": "morning", "city": "paris", "price": 3.5, "rating": 4}


def fresh(url: str, path: str, **kwargs: object) -> httpx.Response:
    """A request on a new connection, so the kernel may hand it to either process."""
    with httpx.Client(timeout=10.0) as client:
        return client.request(kwargs.pop("method", "GET"), url + path, **kwargs)  # type: ignore[arg-type]


def metric(text: str, name: str) -> float:
    found = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def data_segments_in(sock: socket.socket) -> int:
    """Linux ``tcp_info.tcpi_data_segs_in``: TCP segments with payload this socket received."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    return struct.unpack_from("<I", info, 152)[0]


def assert_head_and_body_in_one_segment(port: int) -> None:
    """service/http_protocol.py: a small answer's head and body leave in one write, so they
    arrive as one TCP segment (uvicorn's own protocol sends the head first, alone: two)."""
    body = json.dumps({"records": [ROW, ROW]}).encode()
    request = (
        f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer.partition(b"\r\n\r\n")[2]) < int(
            re.search(rb"(?im)^content-length:\s*(\d+)", answer).group(1)  # type: ignore[union-attr]
        ):
            answer += sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 200"), answer
        assert json.loads(answer.partition(b"\r\n\r\n")[2])["model_version"] == VERSION_A
        assert data_segments_in(sock) == 1


def test_two_processes_share_a_port_metrics_and_reloads(tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    write_tiny_bundle(registry, version=VERSION_A)
    write_tiny_bundle(registry, version=VERSION_B, seed=1, make_current=False)
    port = free_port()
    # DLF_GC_FREEZE as shipped (tests/conftest.py turns it off for in-process apps)
    env = {**os.environ, "PYTHONPATH": str(REPO), "DLF_REGISTRY": str(registry), "DLF_ADMIN_TOKEN": TOKEN, "DLF_GC_FREEZE": "true"}
    env.pop("REDIS_URL", None)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log = (tmp_path / "serve.log").open("w")
    cmd = [sys.executable, "-m", "service.cli", "serve", "--port", str(port), "--processes", "2"]
    proc = subprocess.Popen(cmd + ["--log-level", "warning"], env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        pids: set[int] = set()
        deadline = time.monotonic() + 60
        while len(pids) < 2 and time.monotonic() < deadline:  # both up, both reachable on the one port
            try:
                r = fresh(url, "/info")
                if r.status_code == 200:
                    assert r.json()["process"]["processes"] == 2
                    pids.add(r.json()["process"]["pid"])
            except httpx.TransportError:
                time.sleep(0.2)
        assert len(pids) == 2, (tmp_path / "serve.log").read_text()
        assert proc.pid not in pids  # the supervisor serves nothing itself

        assert_head_and_body_in_one_segment(port)
        for _ in range(29):
            r = fresh(url, "/predict", method="POST", json={"records": [ROW, ROW]})
            assert r.status_code == 200 and r.json()["model_version"] == VERSION_A
        text = fresh(url, "/metrics").text  # whichever process answers, it reports the group
        assert metric(text, 'dlf_requests_total{endpoint="/predict",status="200"}') == 30
        assert metric(text, "dlf_request_rows_sum") == 60
        # the cores are split between the two pools, then added up
        assert metric(text, "dlf_inference_workers") == 2 * max(1, usable_cores() // 2)
        assert metric(text, 'dlf_served_probability_count{version="' + VERSION_A + '"}') == 60

        r = fresh(url, "/admin/reload", method="POST", json={"version": VERSION_B},
                  headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200 and r.json()["model_version"] == VERSION_B
        deadline = time.monotonic() + 10
        seen: dict[int, str] = {}
        while time.monotonic() < deadline:  # the other process follows within its poll interval
            info = fresh(url, "/info").json()
            seen[info["process"]["pid"]] = info["model_version"]
            if len(seen) == 2 and set(seen.values()) == {VERSION_B}:
                break
            time.sleep(0.05)
        assert seen == {pid: VERSION_B for pid in pids}
        text = fresh(url, "/metrics").text
        info_lines = [ln for ln in text.splitlines() if ln.startswith("dlf_model_info{")]
        assert any(VERSION_B in ln and ln.endswith(" 1.0") for ln in info_lines)
        assert all(ln.endswith(" 0.0") for ln in info_lines if VERSION_A in ln)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
        log.close()
    assert code == 0, (tmp_path / "serve.log").read_text()
    for pid in pids:  # the children went with it
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()


def test_a_process_that_cannot_start_stops_the_group_with_its_error(tmp_path: Path) -> None:
    """A port held by someone else (no SO_REUSEPORT): the children fail to bind, serve exits non-zero."""
    import socket

    registry = tmp_path / "registry"
    write_tiny_bundle(registry, version=VERSION_A)
    env = {**os.environ, "PYTHONPATH": str(REPO), "DLF_REGISTRY": str(registry)}
    env.pop("REDIS_URL", None)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        cmd = [sys.executable, "-m", "service.cli", "serve", "--port", str(port), "--processes", "2"]
        done = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "Address already in use" in done.stdout + done.stderr
