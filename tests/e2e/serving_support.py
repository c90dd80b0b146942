"""Helpers for the serving end-to-end tests: real uvicorn and redis-server processes on free ports."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx
import redis

REPO = Path(__file__).resolve().parents[2]
SHARED_REDIS = "redis://127.0.0.1:6379"
# A DLF small enough to train in seconds on one core (model_overrides for training.config.TrainConfig).
TINY_DLF = {
    "embedding_dim": 8,
    "num_layers": 1,
    "num_tokens": 4,
    "rank": 4,
    "block_hidden": 32,
    "head_hidden": 32,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


@contextmanager
def uvicorn_server(env: Mapping[str, str], log_path: Path, timeout: float = 40.0) -> Iterator[str]:
    """Run ``uvicorn --factory service.app:app_factory`` with ``env`` until ready; yields its base URL."""
    port = free_port()
    full_env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "DLF_ORT_INTRA_OP_THREADS": "1",
        "DLF_ORT_INTER_OP_THREADS": "1",
        **env,
    }
    if "REDIS_URL" not in env:
        full_env.pop("REDIS_URL", None)
    cmd = [sys.executable, "-m", "uvicorn", "--factory", "service.app:app_factory"]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, env=full_env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"uvicorn exited with {proc.returncode}:\n{log_path.read_text()}")
            try:
                if httpx.get(f"{url}/readyz", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn not ready after {timeout}s:\n{log_path.read_text()}")
            time.sleep(0.1)
        yield url
    finally:
        _stop(proc)


def wait_redis(port: int, timeout: float) -> None:
    """Block until a redis-server on 127.0.0.1:port answers PING (raise after ``timeout``)."""
    client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
    finally:
        client.close()


class RedisServer:
    """A private redis-server (no persistence) that a test may kill and restart on the same port."""

    def __init__(self, workdir: Path, args: tuple[str, ...] = ()) -> None:
        self.args = args  # extra redis-server options, e.g. ("--appendonly", "yes") to survive a restart
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            raise RuntimeError("redis-server binary not found")
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        cmd = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        cmd += ["--daemonize", "no", "--dir", str(self.workdir), *self.args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_redis(self.port, timeout)

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc)
            self.proc = None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, decode_responses=True)

    def command_calls(self) -> dict[str, int]:
        """Calls per command from INFO commandstats (e.g. {"hmget": 3, "exec": 1})."""
        with self.client() as c:
            stats = c.info("commandstats")
        return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}


def publish_with_cli(registry: Path, redis_url: str, prefix: str) -> str:
    """Run ``python -m service.cli publish-vocab``; returns its stdout (JSON summary)."""
    cmd = [sys.executable, "-m", "service.cli", "publish-vocab", "--registry", str(registry)]
    cmd += ["--redis-url", redis_url, "--prefix", prefix]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"publish-vocab failed: {done.stderr}")
    return done.stdout


def predict(url: str, body: dict, timeout: float = 10.0) -> httpx.Response:
    return httpx.post(f"{url}/predict", json=body, timeout=timeout)


def sample_records(n: int, seed: int) -> list[dict]:
    """Rows mixing known values, unknown values, number/string spellings and missing values."""
    import random

    from service.testing import TINY_VOCAB

    rng = random.Random(seed)
    rows = []
    for i in range(n):
        row: dict = {}
        for name, vocab in TINY_VOCAB.items():
            pick = rng.random()
            if pick < 0.7:
                value: object = rng.choice(vocab)
                if name == "item" and value == "266" and rng.random() < 0.5:
                    value = 266
            elif pick < 0.9:
                value = f"unseen-{seed}-{i}-{name}"
            else:
                value = None
            row[name] = value
        row["price"] = None if rng.random() < 0.1 else round(rng.uniform(0, 50), 3)
        row["rating"] = rng.choice([1, 2.5, "3", 4, 5, -0.5])
        rows.append(row)
    return rows
