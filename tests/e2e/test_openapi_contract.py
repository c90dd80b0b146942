"""Schemathesis (all checks, bounded examples, fixed seed) against the live, typed /openapi.json: 0 failures.

The one exception is in tests/e2e/schemathesis.toml: positive-data acceptance is
off for the OIP v2 infer body, whose validity rules span several list items.
"""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import redis
from serving_support import REPO, SHARED_REDIS, uvicorn_server

from service.testing import write_tiny_bundle

pytestmark = pytest.mark.e2e
TOKEN = "contract-token"


def test_schemathesis_all_checks_pass(tmp_path: Path) -> None:
    bundle = write_tiny_bundle(tmp_path / "registry")
    env = {"DLF_REGISTRY": str(bundle.registry), "DLF_ADMIN_TOKEN": TOKEN, "DLF_LOG_FORMAT": "text"}
    # /feedback needs the impression log's Redis: the shared one, under a prefix of this test's own
    prefix = f"contract-{uuid.uuid4().hex[:12]}:"
    env |= {
        "DLF_IMPRESSIONS_REDIS_URL": SHARED_REDIS,
        "DLF_REDIS_PREFIX": prefix,
        "DLF_IMPRESSIONS_TTL_S": "60",
    }
    with uvicorn_server(env, tmp_path / "service.log") as url:
        cmd = [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "--config-file",
            str(REPO / "tests/e2e/schemathesis.toml"),
        ]
        cmd += ["run", f"{url}/openapi.json", "--max-examples", "25", "--seed", "1"]
        cmd += ["--generation-database", "none", "--no-color", "--request-timeout", "10"]
        cmd += ["-H", f"Authorization: Bearer {TOKEN}"]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=400, cwd=tmp_path)
    with redis.Redis.from_url(SHARED_REDIS) as client:
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
    report = done.stdout[-6000:] + done.stderr[-2000:]
    assert done.returncode == 0, report
    assert "Selected: 15/15" in done.stdout and "Tested: 15" in done.stdout, report
    generated = re.search(r"(\d+) generated, (\d+) passed", done.stdout)
    assert generated is not None and generated.group(1) == generated.group(2), report
    assert "failure" not in done.stdout.split("SUMMARY")[-1], report
