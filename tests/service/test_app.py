"""The FastAPI app in-process (real lifespan, real ONNX session, embedded vocab)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np

from service.testing import VERSION_A, VERSION_B, TinyBundle

RECORDS = [
    {"user": "u1", "item": 266, "daytime": "morning", "city": "paris", "price": 3.5, "rating": 4},
    {"user": "u9", "item": "1.5", "daytime": None, "city": "rome", "price": None, "rating": "2"},
    {"user": "u3", "item": 267.0, "daytime": "night", "city": "oslo", "price": 0, "rating": -1.25},
]


async def test_predict_matches_reference_and_counts_oov(make_client, bundle_a: TinyBundle, tmp_path: Path):
    log_path = tmp_path / "served.jsonl"
    client = await make_client(request_log_path=log_path)
    r = await client.post("/predict", json={"records": RECORDS})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_version"] == VERSION_A
    np.testing.assert_allclose(body["probabilities"], bundle_a.reference(RECORDS), atol=1e-6)
    assert body["oov_fields"] == {"user": 1, "city": 1}
    assert body["degraded"] is False
    assert r.headers["x-request-id"] == body["request_id"]
    state = client.app.state.dlf
    state.request_log.close()  # drain the background writer
    (line,) = log_path.read_text().splitlines()
    logged = json.loads(line)
    assert logged["request_id"] == body["request_id"] and logged["records"] == RECORDS
    assert logged["probabilities"] == body["probabilities"] and logged["model_version"] == VERSION_A


async def test_ranking_shape_equals_records(make_client, bundle_a: TinyBundle) -> None:
    client = await make_client()
    context = {"user": "u2", "daytime": "evening", "city": "paris", "rating": 5}
    candidates = [
        {"item": 266, "price": 1.0},
        {"item": "abc", "price": 2.0, "rating": 1},
        {"item": "x", "price": 0},
    ]
    ranked = await client.post("/predict", json={"context": context, "candidates": candidates})
    records = [{**context, **c} for c in candidates]
    flat = await client.post("/predict", json={"records": records})
    assert ranked.status_code == flat.status_code == 200
    assert ranked.json()["probabilities"] == flat.json()["probabilities"]
    np.testing.assert_allclose(ranked.json()["probabilities"], bundle_a.reference(records), atol=1e-6)
    assert ranked.json()["oov_fields"] == {"item": 1}


async def test_concurrent_requests_share_batches(make_client, bundle_a: TinyBundle) -> None:
    client = await make_client(max_wait_ms=30, max_batch_rows=256)
    rows = [{**RECORDS[i % 3], "rating": i} for i in range(12)]
    responses = await asyncio.gather(*(client.post("/predict", json={"records": [row]}) for row in rows))
    got = [r.json()["probabilities"][0] for r in responses]
    np.testing.assert_allclose(got, bundle_a.reference(rows), atol=1e-6)
    batcher = client.app.state.dlf.batcher
    assert batcher.batches_run < len(rows)


async def test_operational_endpoints(make_client, bundle_a: TinyBundle) -> None:
    client = await make_client(max_batch_rows=64, max_wait_ms=1.5)
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = (await client.get("/readyz")).json()
    assert ready["ready"] and ready["warmed_up"] and ready["feature_store"]["backend"] == "embedded"
    info = (await client.get("/info")).json()
    assert info["model_version"] == VERSION_A
    assert info["providers"][0] in {"CPUExecutionProvider", "CUDAExecutionProvider"}
    assert info["batching"] == {"enabled": True, "max_batch_rows": 64, "max_wait_ms": 1.5}
    assert [(f["name"], f["kind"]) for f in info["fields"]][:2] == [
        ("user", "categorical"),
        ("price", "numeric"),
    ]
    await client.post("/predict", json={"records": RECORDS[:1]})
    text = (await client.get("/metrics")).text
    provider = info["providers"][0]
    assert f'dlf_model_info{{provider="{provider}",version="{VERSION_A}"}} 1.0' in text
    assert 'dlf_requests_total{endpoint="/predict",status="200"} 1.0' in text
    assert "dlf_request_rows_count 1.0" in text and "dlf_batch_rows_count" in text
    schema = (await client.get("/openapi.json")).json()
    examples = schema["components"]["schemas"]["PredictRequest"]["examples"]
    assert {"records"} in [set(e) for e in examples] and {"context", "candidates"} in [
        set(e) for e in examples
    ]


async def test_body_and_row_limits(make_client, bundle_a: TinyBundle) -> None:
    client = await make_client(max_body_bytes=2000, max_request_rows=2)
    r = await client.post("/predict", json={"records": RECORDS * 20})
    assert r.status_code == 413 and "2000" in r.json()["detail"]

    async def chunked():
        for _ in range(5):
            yield b" " * 600

    r = await client.post("/predict", content=chunked(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    r = await client.post("/predict", json={"records": RECORDS})
    assert r.status_code == 422 and "too many records: 3 > max 2" in r.json()["detail"]
    text = (await client.get("/metrics")).text
    assert 'dlf_requests_total{endpoint="/predict",status="413"} 2.0' in text


async def test_not_ready_without_a_bundle(make_client, registry: Path) -> None:
    registry.mkdir(parents=True)
    client = await make_client(wait=False)
    await asyncio.wait_for(client.app.state.dlf.loaded.wait(), 10)
    r = await client.get("/readyz")
    assert r.status_code == 503 and "no model bundle" in r.json()["error"]
    assert (await client.get("/healthz")).status_code == 200
    r = await client.post("/predict", json={"records": RECORDS})
    assert r.status_code == 503 and "no model bundle" in r.json()["detail"]


async def test_model_version_override(make_client, bundle_b: TinyBundle) -> None:
    client = await make_client(model_version=VERSION_B)
    body = (await client.post("/predict", json={"records": RECORDS})).json()
    assert body["model_version"] == VERSION_B
    np.testing.assert_allclose(body["probabilities"], bundle_b.reference(RECORDS), atol=1e-6)
