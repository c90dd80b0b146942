"""The compose stack under docker-compose with a real engine.

api x2 behind nginx, redis, prometheus (images built from Debian packages via
deploy/compose.local.yml) and the flow: bootstrap -> predict through nginx ->
retrain (trainer service) -> both replicas serve the new version -> Prometheus
sees it. The test reaches the stack only through the ports compose publishes
on 127.0.0.1; the containers talk on the project's own network.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
import yaml
from docker_support import (
    INFRA,
    ROOT,
    SERVE_CPU,
    TRAINER_CPU,
    make_readable,
    require_images,
    shared_dir,
    wait_for,
)

from training.data.synthetic import generate

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
from serving_support import free_port  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.docker]
FAST = ["--epochs", "1", "--batch-size", "512", "--cpu"]  # the flow is under test, not the model
TOKEN = "compose-test-token"
ROW = {
    "user": "u1",
    "item": 3,
    "device": "mobile",
    "hour": 9,
    "price": 9.5,
    "age": 30,
}  # training.cli demo's fields


class Stack:
    """One compose project (unique name, own network and volumes), removed at the end."""

    def __init__(self, data_dir: Path) -> None:
        self.project = f"dlftest{uuid.uuid4().hex[:8]}"
        self.http, self.admin, self.prom = free_port(), free_port(), free_port()
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("DLF_", "COMPOSE_"))},
            "DLF_ADMIN_TOKEN": TOKEN,
            "GRAFANA_ADMIN_PASSWORD": uuid.uuid4().hex,
            "DLF_HTTP_BIND": "127.0.0.1",
            "DLF_HTTP_PORT": str(self.http),
            "DLF_ADMIN_PORT": str(self.admin),
            "DLF_PROMETHEUS_PORT": str(self.prom),
            "DLF_DATA_DIR": str(data_dir),
            "DLF_TRAIN_FILE": "synthetic.csv",
            "DLF_BOOTSTRAP_ARGS": "--rows 2000 " + " ".join(FAST),
            "DLF_RELOAD_POLL_SECONDS": "2",
            "DLF_ORT_INTRA_OP_THREADS": "1",
        }

    def compose(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        cmd = [
            "docker-compose",
            "-p",
            self.project,
            "-f",
            "docker-compose.yml",
            "-f",
            "deploy/compose.local.yml",
        ]
        proc = subprocess.run(
            [*cmd, *args], cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=timeout
        )
        assert proc.returncode == 0, (
            f"docker-compose {' '.join(args)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
        )
        return proc

    def logs(self) -> str:
        try:
            return self.compose("logs", "--no-color", "--tail", "60", timeout=60).stdout[-6000:]
        except AssertionError as exc:
            return str(exc)

    def prometheus_versions(self) -> list[str]:
        """The version label of every api target's dlf_model_info (one entry per replica)."""
        try:
            r = httpx.get(
                f"http://127.0.0.1:{self.prom}/api/v1/query",
                params={"query": "dlf_model_info == 1"},
                timeout=5,
            )
        except httpx.TransportError:
            return []
        if r.status_code != 200:
            return []
        return sorted(s["metric"]["version"] for s in r.json()["data"]["result"])


def test_compose_stack_flow_with_a_real_engine() -> None:
    require_images(SERVE_CPU, TRAINER_CPU, INFRA)
    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose not installed")
    data = shared_dir()
    stack = Stack(data)
    nginx = f"http://127.0.0.1:{stack.http}"
    try:
        # bootstrap (trains the first model into the empty registry volume), then api x2 etc.
        stack.compose(
            "up",
            "-d",
            "--no-build",
            "--scale",
            "api=2",
            "redis",
            "bootstrap",
            "api",
            "nginx",
            "prometheus",
            timeout=420,
        )

        def served_version() -> str | None:
            try:
                r = httpx.post(f"{nginx}/predict", json={"records": [ROW]}, timeout=10)
            except httpx.TransportError:
                return None
            return r.json()["model_version"] if r.status_code == 200 else None

        first = wait_for(served_version, 180, "a prediction through nginx", stack.logs)
        # two replicas, both scraped, both on the bootstrap model
        wait_for(
            lambda: stack.prometheus_versions() == [first, first],
            90,
            "prometheus to scrape 2 replicas",
            stack.logs,
        )

        # /admin/* is not on the public listener; the loopback admin listener reaches a replica
        assert httpx.post(f"{nginx}/admin/reload", timeout=10).status_code == 404
        assert httpx.post(f"http://127.0.0.1:{stack.admin}/admin/reload", timeout=10).status_code == 401

        # retrain: the trainer service's own command on new data, plus the short CPU settings
        generate(data, rows=4_000, seed=1)
        make_readable(data)
        config = yaml.safe_load(stack.compose("--profile", "train", "config", timeout=60).stdout)
        command = config["services"]["trainer"]["command"]
        # any candidate is promoted (tolerance 1): the gate has its own tests (tests/e2e)
        run = ["run", "--rm", "-T", "-e", "DLF_PROMOTION_TOLERANCE=1", "trainer", *command, *FAST]
        stack.compose("--profile", "train", *run, timeout=420)

        def switched() -> str | None:
            versions = {served_version() for _ in range(8)}
            return (
                versions.pop()
                if len(versions) == 1 and first not in versions and None not in versions
                else None
            )

        second = wait_for(switched, 90, "nginx to answer with the retrained version only", stack.logs)
        assert second != first
        wait_for(
            lambda: stack.prometheus_versions() == [second, second],
            90,
            "prometheus to see both replicas switch",
            stack.logs,
        )
    finally:
        try:
            stack.compose("--profile", "train", "down", "-v", "--remove-orphans", "-t", "10", timeout=180)
        finally:
            shutil.rmtree(data, ignore_errors=True)
