"""Real uvicorn: the X-Request-ID sent is the one received, and the JSON log line of that request carries it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from serving_support import sample_records, uvicorn_server

from service.testing import write_tiny_bundle

pytestmark = pytest.mark.e2e
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


def log_lines(path: Path, request_id: str, timeout: float = 5.0) -> list[dict]:
    """The JSON log records carrying ``request_id`` (the access line is written as the request ends)."""
    deadline = time.monotonic() + timeout
    while True:
        found = []
        for line in path.read_text().splitlines():
            if request_id in line:
                found.append(json.loads(line))  # every line must be JSON, this one included
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def test_request_id_is_echoed_and_logged(tmp_path: Path) -> None:
    bundle = write_tiny_bundle(tmp_path / "registry")
    log = tmp_path / "service.log"
    with uvicorn_server({"DLF_REGISTRY": str(bundle.registry)}, log) as url:
        headers = {"X-Request-ID": "checkout-7f3a-0001", "traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01"}
        r = httpx.post(f"{url}/predict", json={"records": sample_records(4, seed=2)}, headers=headers)
        assert r.status_code == 200
        assert r.headers["x-request-id"] == "checkout-7f3a-0001"
        assert r.json()["request_id"] == "checkout-7f3a-0001"
        version, span, flags = (
            r.headers["traceparent"].split("-")[0],
            *r.headers["traceparent"].split("-")[2:],
        )
        assert r.headers["traceparent"].split("-")[1] == TRACE_ID and span != "00f067aa0ba902b7"
        assert (version, flags) == ("00", "01")

        # errors and other endpoints echo it too
        bad = httpx.post(f"{url}/predict", json={"records": []}, headers={"X-Request-ID": "bad-body-1"})
        assert bad.status_code == 422 and bad.headers["x-request-id"] == "bad-body-1"
        assert (
            httpx.get(f"{url}/nowhere", headers={"X-Request-ID": "lost-1"}).headers["x-request-id"]
            == "lost-1"
        )
        # an unusable id is replaced, never echoed
        junk = httpx.get(f"{url}/healthz", headers={"X-Request-ID": "x" * 300})
        assert junk.headers["x-request-id"] != "x" * 300 and len(junk.headers["x-request-id"]) == 32

        (line,) = log_lines(log, "checkout-7f3a-0001")
        assert line["logger"] == "service.access" and line["level"] == "INFO"
        assert line["status"] == 200 and line["path"] == "/predict" and line["rows"] == 4
        assert line["model_version"] == bundle.version and line["trace_id"] == TRACE_ID
        assert line["latency_ms"] > 0
        (err,) = log_lines(log, "bad-body-1")
        assert err["status"] == 422
