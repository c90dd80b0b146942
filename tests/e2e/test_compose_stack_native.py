"""The compose stack, natively: redis-server, the api with the compose environment, prometheus
with the deploy config, the bootstrap and trainer commands from docker-compose.yml. The retrain
job promotes a new bundle and the running api switches to it (seen by the api and by Prometheus).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml
from serving_support import REPO, RedisServer, free_port, predict, uvicorn_server

from service.contract import read_current
from training.data.synthetic import generate

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        shutil.which("docker-compose") is None or shutil.which("prometheus") is None,
        reason="needs Debian's docker-compose (config only) and prometheus",
    ),
]
ADMIN_TOKEN = "native-stack-token"
FAST = ["--epochs", "2", "--batch-size", "256", "--cpu"]  # keep the CPU test short


def compose_config() -> dict:
    """`docker-compose config`: the file with every ${VAR} resolved, as the engine would see it."""
    env = {
        **os.environ,
        "DLF_ADMIN_TOKEN": ADMIN_TOKEN,
        "DLF_TRAIN_FILE": "synthetic.csv",
        "GRAFANA_ADMIN_PASSWORD": "native-stack-password",  # compose refuses to start without one
    }
    done = subprocess.run(
        ["docker-compose", "-f", "docker-compose.yml", "config"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)


def localize(value: str, paths: dict[str, str]) -> str:
    """Container paths and service host names -> the native equivalents."""
    for old, new in paths.items():
        value = value.replace(old, new)
    return value


def python_argv(command: list[str] | str) -> list[str]:
    """The `python -m ...` part of a compose command (the bootstrap wraps it in `sh -c`)."""
    text = command if isinstance(command, str) else " ".join(command)
    start = text.index("python -m ")
    end = text.find(";", start)
    words = text[start : None if end < 0 else end].split()
    return [sys.executable, *words[1:]]


def run_job(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **env}
    return subprocess.run(argv, cwd=REPO, env=full_env, capture_output=True, text=True, timeout=300)


def start_prometheus(tmp_path: Path, api_target: str) -> tuple[subprocess.Popen, str]:
    """deploy/prometheus/prometheus.yml with the api job pointed at the native api (no Docker DNS)."""
    config = yaml.safe_load((REPO / "deploy/prometheus/prometheus.yml").read_text())
    config["global"]["scrape_interval"] = "1s"
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "dlf-api"]
    job.pop("dns_sd_configs")
    job["scrape_interval"] = "1s"
    job["static_configs"] = [{"targets": [api_target]}]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    check = subprocess.run(["promtool", "check", "config", str(path)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    port = free_port()
    log = (tmp_path / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={path}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    return proc, f"http://127.0.0.1:{port}"


def wait_for(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def prometheus_versions(prom: str) -> set[str]:
    try:
        r = httpx.get(f"{prom}/api/v1/query", params={"query": "dlf_model_info == 1"}, timeout=5)
    except httpx.TransportError:
        return set()
    if r.status_code != 200:  # still starting up: it answers in plain text until ready
        return set()
    return {s["metric"]["version"] for s in r.json().get("data", {}).get("result", [])}


def test_retrain_job_switches_the_running_api(tmp_path: Path) -> None:
    compose = compose_config()["services"]
    redis = RedisServer(tmp_path)
    redis.start()
    registry, data = tmp_path / "registry", tmp_path / "data"
    paths = {"/registry": str(registry), "/data": str(data), "redis://redis:6379/0": redis.url}
    try:
        # bootstrap service: first model into the empty registry (vocab published, CURRENT set)
        boot_env = {k: localize(str(v), paths) for k, v in compose["bootstrap"]["environment"].items()}
        boot_argv = [localize(a, paths) for a in python_argv(compose["bootstrap"]["command"])]
        boot = run_job([*boot_argv, "--rows", "3000", *FAST], boot_env)
        assert boot.returncode == 0, boot.stderr[-3000:]
        first = read_current(registry)
        assert first is not None

        api_env = {k: localize(str(v), paths) for k, v in compose["api"]["environment"].items()}
        assert api_env["DLF_ADMIN_TOKEN"] == ADMIN_TOKEN and api_env["REDIS_URL"] == redis.url
        api_env["DLF_ORT_INTRA_OP_THREADS"] = "1"
        with uvicorn_server(api_env, tmp_path / "api.log") as api:
            prom, prom_url = start_prometheus(tmp_path, api.removeprefix("http://"))
            try:
                wait_for(lambda: first in prometheus_versions(prom_url), 40, "prometheus to scrape the api")

                # trainer service (profile `train`): retrain on new data from the data volume
                files = generate(data, rows=12_000, seed=1)
                assert files.data.parent == data
                trainer_env = {
                    k: localize(str(v), paths) for k, v in compose["trainer"]["environment"].items()
                }
                trainer_argv = [localize(a, paths) for a in python_argv(compose["trainer"]["command"])]
                job = run_job([*trainer_argv, *FAST], trainer_env)
                assert job.returncode == 0, job.stdout[-2000:] + job.stderr[-3000:]
                second = read_current(registry)
                assert second is not None and second != first

                row = {"user": "u1", "item": 3, "device": "mobile", "hour": 9, "price": 9.5, "age": 30}
                body = wait_for(
                    lambda: (b := predict(api, {"records": [row]}).json())["model_version"] == second and b,
                    30,
                    "the api to serve the retrained version",
                )
                assert 0.0 < body["probabilities"][0] < 1.0
                info = httpx.get(f"{api}/info", timeout=5).json()
                assert info["model_version"] == second
                wait_for(
                    lambda: prometheus_versions(prom_url) == {second}, 40, "prometheus to see the switch"
                )
            finally:
                prom.terminate()
                prom.wait(10)
    finally:
        redis.stop()
