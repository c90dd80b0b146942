"""bench/single_row_choice.py on a CPU-only host: both paths are timed; nothing is chosen away."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from bench.single_row_choice import app
from service.testing import VERSION_A, VERSION_B, write_tiny_bundle


def test_it_reports_both_paths_for_each_bundle(tmp_path: Path) -> None:
    a = write_tiny_bundle(tmp_path / "registry", version=VERSION_A, seed=0, make_current=True)
    b = write_tiny_bundle(tmp_path / "registry", version=VERSION_B, seed=1)
    result = CliRunner().invoke(app, [str(a.path), str(b.path), "--calls", "3"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    assert [r["bundle"] for r in lines] == [VERSION_A, VERSION_B]
    for r in lines:
        # CPU only: the fixed-batch session is built (same provider) and kept without a timing contest
        assert r["main_provider"] == r["one_row_session"] == "CPUExecutionProvider"
        assert r["main_1row_ms"] > 0 and r["one_row_session_ms"] > 0
