"""A real Prometheus server scrapes the running service and can query dlf_requests_total."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from serving_support import free_port, predict, uvicorn_server

from service.testing import write_tiny_bundle

pytestmark = pytest.mark.e2e

PROMETHEUS = shutil.which("prometheus")


@pytest.mark.skipif(PROMETHEUS is None, reason="prometheus binary not installed")
def test_prometheus_scrapes_dlf_metrics(tmp_path: Path) -> None:
    bundle = write_tiny_bundle(tmp_path / "registry")
    with uvicorn_server({"DLF_REGISTRY": str(bundle.registry)}, tmp_path / "uvicorn.log") as url:
        assert (
            predict(
                url,
                {
                    "records": [
                        {"user": "u1", "item": 266, "daytime": None, "city": "paris", "price": 1, "rating": 2}
                    ]
                },
            ).status_code
            == 200
        )
        target = url.removeprefix("http://")
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n"
            "  - job_name: dlf\n    metrics_path: /metrics\n"
            f"    static_configs:\n      - targets: ['{target}']\n"
        )
        check = subprocess.run(["promtool", "check", "config", str(config)], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        port = free_port()
        log = (tmp_path / "prometheus.log").open("w")
        proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            api = f"http://127.0.0.1:{port}/api/v1/query"
            deadline = time.monotonic() + 30
            series: list[dict] = []
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    r = httpx.get(api, params={"query": "dlf_requests_total"}, timeout=2)
                    if r.status_code == 200:
                        series = r.json()["data"]["result"]
                        if any(s["metric"].get("endpoint") == "/predict" for s in series):
                            break
                except httpx.TransportError:
                    pass
                time.sleep(0.5)
        finally:
            proc.terminate()
            proc.wait(10)
            log.close()
        predict_series = [s for s in series if s["metric"].get("endpoint") == "/predict"]
        assert predict_series, (
            f"no dlf_requests_total series: {series}\n{(tmp_path / 'prometheus.log').read_text()[-2000:]}"
        )
        (s,) = [s for s in predict_series if s["metric"]["status"] == "200"]
        assert s["metric"]["job"] == "dlf" and float(s["value"][1]) >= 1
