"""The Grafana calibration panel: right series, valid PromQL (promtool), per model version."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "dashboards" / "dlf.json"


def panel(title_start: str) -> dict:
    (found,) = [p for p in json.loads(DASHBOARD.read_text())["panels"] if p["title"].startswith(title_start)]
    return found


def test_calibration_panel_compares_observed_and_predicted_ctr_per_version() -> None:
    exprs = {t["legendFormat"].split(" {{")[0]: t["expr"] for t in panel("Calibration")["targets"]}
    assert set(exprs) == {"observed CTR", "mean predicted CTR"}
    observed, predicted = exprs["observed CTR"], exprs["mean predicted CTR"]
    assert (
        "dlf_feedback_clicked_probability_count" in observed and "dlf_feedback_probability_count" in observed
    )
    assert "dlf_feedback_probability_sum" in predicted and "dlf_feedback_probability_count" in predicted
    assert all(e.count("sum by (version)") == 2 for e in exprs.values())


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (prometheus package) not installed")
def test_closed_loop_panel_queries_are_valid_promql(tmp_path: Path) -> None:
    targets = panel("Calibration")["targets"] + panel("Impression log")["targets"]
    rules = [
        {"record": f"dlf:panel_check_{i}", "expr": t["expr"].replace("$__rate_interval", "1m")}
        for i, t in enumerate(targets)
    ]
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(rules)} rules found" in done.stdout
