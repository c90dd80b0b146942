"""tests/conftest.py: with CI=true, a skip for a missing CI component fails; other skips stay skips."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

SAMPLE = """
import pytest

def test_needs_nginx():
    pytest.skip("nginx not installed")

@pytest.mark.skipif(True, reason="docker engine not running")
def test_needs_docker():
    pass

def test_needs_a_gpu():
    pytest.skip("no CUDA device here")
"""


def run(tmp_path: Path, ci: str) -> str:
    shutil.copy(Path(__file__).resolve().parents[1] / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    env = {**os.environ, "CI": ci}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rA", str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    return proc.stdout.splitlines()[-1]


def test_ci_turns_component_skips_into_failures(tmp_path: Path) -> None:
    summary = run(tmp_path, "true")
    assert "1 failed" in summary and "1 error" in summary and "1 skipped" in summary, summary


def test_without_ci_they_skip(tmp_path: Path) -> None:
    assert "3 skipped" in run(tmp_path, ""), "outside CI a missing component only skips"
