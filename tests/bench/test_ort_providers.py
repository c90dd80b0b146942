"""bench/ort_providers.py on a CPU-only onnxruntime: it measures what is there and says so."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from bench.ort_providers import app
from service.testing import VERSION_A, write_tiny_bundle


def test_on_the_cpu_alone_it_times_each_batch_size_up_to_the_cap(tmp_path: Path) -> None:
    bundle = write_tiny_bundle(tmp_path / "registry", version=VERSION_A, seed=0, make_current=True)
    table = tmp_path / "table.md"
    result = CliRunner().invoke(
        app, ["--bundle", str(bundle.path), "--seconds", "0.05", "--max-batch", "100", "--out", str(table)]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["providers"] == ["CPUExecutionProvider"] and summary["max_abs_diff"] is None
    runs = summary["results"]["CPUExecutionProvider"]
    assert [r["batch"] for r in runs] == [1, 10, 100]
    assert all(r["calls"] >= 5 and 0 < r["p50_ms"] <= r["p99_ms"] and r["rows_per_s"] > 0 for r in runs)
    rows = table.read_text().splitlines()
    assert len(rows) == 2 + 3 and rows[2].startswith("| 1 |") and rows[4].startswith("| 100 |")
