"""The serve-cpu image, built by a real engine, answers /readyz and /predict (no torch inside)."""

from __future__ import annotations

import shutil
import sys
import uuid
from pathlib import Path

import httpx
import pytest
from docker_support import (
    SERVE_CPU,
    docker,
    make_readable,
    published_port,
    require_images,
    shared_dir,
    wait_for,
)

from service.testing import write_tiny_bundle

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
from serving_support import sample_records  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.docker]
MAX_IMAGE_BYTES = 400 * 1000 * 1000  # `docker image inspect` Size, decimal MB as docker prints it


def test_serve_cpu_image_is_small_and_torch_free() -> None:
    require_images(SERVE_CPU)
    size = int(docker("image", "inspect", SERVE_CPU, "--format", "{{.Size}}").stdout)
    assert size <= MAX_IMAGE_BYTES, f"{SERVE_CPU} is {size / 1e6:.0f} MB > 400 MB"
    probe = "import importlib.util as u; print([m for m in ('torch','sklearn','matplotlib','pyarrow') if u.find_spec(m)])"
    out = docker("run", "--rm", "--network", "none", SERVE_CPU, "python", "-c", probe).stdout.strip()
    assert out == "[]", f"training libraries in the serving image: {out}"
    user = docker("image", "inspect", SERVE_CPU, "--format", "{{.Config.User}}").stdout.strip()
    assert user not in ("", "root", "0")


def test_serve_cpu_container_answers_readyz_and_predict() -> None:
    require_images(SERVE_CPU)
    work = shared_dir()
    name = f"dlf-test-serve-{uuid.uuid4().hex[:8]}"
    try:
        bundle = write_tiny_bundle(work / "registry")
        make_readable(work)
        docker(
            "run", "-d", "--name", name, "--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL",
            "-p", "127.0.0.1::8000", "-v", f"{work / 'registry'}:/registry:ro", SERVE_CPU,
        )  # fmt: skip
        url = f"http://127.0.0.1:{published_port(name, 8000)}"

        def ready() -> dict | None:
            try:
                r = httpx.get(f"{url}/readyz", timeout=3)
            except httpx.TransportError:
                return None
            return r.json() if r.status_code == 200 else None

        body = wait_for(
            ready, 90, "the container's /readyz", lambda: docker("logs", name, check=False).stderr[-3000:]
        )
        assert body["model_version"] == bundle.version
        r = httpx.post(f"{url}/predict", json={"records": sample_records(5, seed=1)}, timeout=10)
        assert r.status_code == 200, r.text
        probs = r.json()["probabilities"]
        assert len(probs) == 5 and all(0.0 < p < 1.0 for p in probs)
        bad = httpx.post(f"{url}/predict", json={"records": [{"nope": 1}]}, timeout=10)
        assert bad.status_code == 422
    finally:
        docker("rm", "-f", name, check=False)
        shutil.rmtree(work, ignore_errors=True)
