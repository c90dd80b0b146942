"""bench/single_row_choice.py on a CPU-only host: the load-time choice is printed, and the paths kept are timed."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench.single_row_choice import app
from service.testing import VERSION_A, VERSION_B, write_tiny_bundle


def test_it_reports_the_choice_and_the_paths_kept_for_each_bundle(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    a = write_tiny_bundle(tmp_path / "registry", version=VERSION_A, seed=0, make_current=True)
    b = write_tiny_bundle(tmp_path / "registry", version=VERSION_B, seed=1)
    with caplog.at_level(logging.INFO):
        result = CliRunner().invoke(app, [str(a.path), str(b.path), "--calls", "3"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    assert [r["bundle"] for r in lines] == [VERSION_A, VERSION_B]
    for r in lines:
        # CPU only: the fixed-batch session is built on the same provider and kept only if it timed faster
        assert r["main_provider"] == "CPUExecutionProvider" and r["main_1row_ms"] > 0
        if r["one_row_session"] is None:
            assert r["one_row_session_ms"] is None
        else:
            assert r["one_row_session"] == "CPUExecutionProvider" and r["one_row_session_ms"] > 0
    assert caplog.text.count("1-row calls of") == 2  # load_model's decision, one per bundle
