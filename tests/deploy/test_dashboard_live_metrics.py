"""Every metric the Grafana dashboard queries is really exported by a running service."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_deploy_config import DASHBOARD, dashboard_metric_names

from service.testing import write_tiny_bundle

# The uvicorn/redis process helpers live beside the serving end-to-end tests.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
from serving_support import predict, sample_records, uvicorn_server  # noqa: E402

pytestmark = pytest.mark.e2e


def exported_names(metrics_text: str) -> set[str]:
    """Family and sample names of a /metrics scrape (a counter family `x` also exports `x_total`)."""
    names: set[str] = set()
    for family in text_string_to_metric_families(metrics_text):
        names.add(family.name)
        if family.type == "counter":
            names.add(family.name + "_total")
        names.update(sample.name for sample in family.samples)
    return names


def test_every_dashboard_metric_is_in_a_live_scrape(tmp_path: Path) -> None:
    bundle = write_tiny_bundle(tmp_path / "registry")
    with uvicorn_server({"DLF_REGISTRY": str(bundle.registry)}, tmp_path / "uvicorn.log") as url:
        assert predict(url, {"records": sample_records(5, seed=1)}).status_code == 200
        scrape = httpx.get(f"{url}/metrics", timeout=10).text
    live = exported_names(scrape)
    assert "dlf_requests_total" in live
    by_panel = dashboard_metric_names(json.loads(DASHBOARD.read_text()), live)
    missing = {title: sorted(names - live) for title, names in by_panel.items() if names - live}
    assert not missing, f"dashboard panels query metrics the service does not export: {missing}"
