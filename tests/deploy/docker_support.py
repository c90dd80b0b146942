"""Helpers for the tests that run the images with a real Docker engine.

The tests reach containers only through ports published on 127.0.0.1;
containers talk to each other only on the network the test's compose
project (or `docker run`) created.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVE_CPU = "dlf-ctr:serve-cpu"
TRAINER_CPU = "dlf-ctr:trainer-cpu"
INFRA = "dlf-infra:bookworm"
BUILD_HINT = "build them with `bash deploy/docker/build-local.sh` (what .ci/run does)"
T = TypeVar("T")


def docker(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def require_images(*images: str) -> None:
    """Skip (fail under CI=true, tests/conftest.py) unless the docker engine answers and the images exist."""
    if shutil.which("docker") is None:
        pytest.skip("docker client not installed")
    if subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode != 0:
        pytest.skip("docker engine not running")
    missing = [i for i in images if docker("image", "inspect", i, check=False).returncode != 0]
    if missing:
        pytest.skip(f"docker images {missing} not built; {BUILD_HINT}")


def shared_dir() -> Path:
    """A world-readable temp dir (pytest's tmp_path is 0700: the image's user 10001 could not read it)."""
    path = Path(tempfile.mkdtemp(prefix="dlf-docker-"))
    path.chmod(0o755)
    return path


def make_readable(path: Path) -> None:
    for p in [path, *path.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)


def published_port(container: str, port: int) -> int:
    """The 127.0.0.1 host port docker chose for ``port`` of ``container``."""
    out = docker("port", container, str(port)).stdout.split()
    local = [line for line in out if line.startswith("127.0.0.1:")]
    assert local, f"{container}:{port} is not published on 127.0.0.1: {out}"
    return int(local[0].rsplit(":", 1)[1])


def wait_for(
    check: Callable[[], T | None], timeout: float, what: str, on_timeout: Callable[[], str] = str
) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{on_timeout()}")


def ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")
