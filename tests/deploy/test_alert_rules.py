"""Prometheus alert rules: valid, and every alert has a `promtool test rules` case where it fires."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

PROM = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
REQUIRED = {
    "DlfHighErrorRate",
    "DlfHighLatencyP99",
    "DlfDegradedAnswers",
    "DlfSheddingLoad",
    "DlfRedisErrors",
    "DlfReloadRefused",
    "DlfModelNotReady",
}


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool not installed (Debian: apt-get install prometheus)")
    return path


def test_rules_are_valid_and_loaded_by_the_config() -> None:
    proc = subprocess.run(
        [promtool(), "check", "rules", "alerts.yml"], cwd=PROM, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "alerts.yml" in yaml.safe_load((PROM / "prometheus.yml").read_text())["rule_files"]


def test_promtool_unit_tests_pass_and_cover_every_alert() -> None:
    proc = subprocess.run(
        [promtool(), "test", "rules", "alerts.test.yml"],
        cwd=PROM,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rules = yaml.safe_load((PROM / "alerts.yml").read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    assert alerts == REQUIRED
    cases = yaml.safe_load((PROM / "alerts.test.yml").read_text())["tests"]
    firing = {t["alertname"] for c in cases for t in c["alert_rule_test"] if t["exp_alerts"]}
    assert firing == REQUIRED, f"alerts without a firing test case: {sorted(REQUIRED - firing)}"


def test_a_broken_rule_fails_the_unit_tests(tmp_path: Path) -> None:
    """The unit tests are not vacuous: a threshold raised past the test data makes promtool fail."""
    (tmp_path / "alerts.yml").write_text((PROM / "alerts.yml").read_text().replace("> 0.01", "> 0.5"))
    shutil.copy(PROM / "alerts.test.yml", tmp_path / "alerts.test.yml")
    proc = subprocess.run(
        [promtool(), "test", "rules", "alerts.test.yml"], cwd=tmp_path, capture_output=True, text=True
    )
    assert proc.returncode != 0 and "DlfHighErrorRate" in proc.stdout + proc.stderr


def test_dashboard_degraded_rate_leaves_out_health_probes() -> None:
    dashboard = json.loads((PROM.parent / "grafana" / "dashboards" / "dlf.json").read_text())
    (panel,) = [p for p in dashboard["panels"] if p.get("title") == "Degraded response rate"]
    ratio = next(t["expr"] for t in panel["targets"] if "dlf_degraded_responses_total" in t["expr"])
    denominator = ratio.split("/", 1)[1]
    assert "/healthz" in denominator and "/readyz" in denominator and "!~" in denominator
