"""A real uvicorn process (embedded vocab) answers exactly what the bundle's ONNX session says."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import onnxruntime as ort
import pytest
from serving_support import predict, sample_records, uvicorn_server

from service.testing import TinyBundle, write_tiny_bundle

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> TinyBundle:
    return write_tiny_bundle(tmp_path_factory.mktemp("registry"))


@pytest.fixture(scope="module")
def server(bundle: TinyBundle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("logs") / "uvicorn.log"
    with uvicorn_server({"DLF_REGISTRY": str(bundle.registry)}, log) as url:
        yield url


def test_predictions_equal_the_bundle_session(server: str, bundle: TinyBundle) -> None:
    records = sample_records(60, seed=1)
    r = predict(server, {"records": records})
    assert r.status_code == 200, r.text
    body = r.json()
    cat, num = bundle.encode(records)  # independent encoding by the contract
    session = ort.InferenceSession(str(bundle.path / "model.onnx"), providers=["CPUExecutionProvider"])
    (expected,) = session.run(["probability"], {"cat_ids": cat, "numerics": num})
    got = np.array(body["probabilities"])
    assert got.shape == (60,)
    assert np.abs(got - expected).max() <= 1e-6
    assert np.abs(got - bundle.forward(cat, num)).max() <= 1e-6
    assert body["oov_fields"] == {
        f.name: int((cat[:, j] == 0).sum())
        for j, f in enumerate(bundle.schema.categorical)
        if (cat[:, j] == 0).any()
    }
    assert body["degraded"] is False and body["model_version"] == bundle.version


def test_context_and_candidates_equal_records(server: str) -> None:
    context = {"user": "u3", "daytime": "night", "city": "oslo", "rating": 2}
    candidates = [
        {"item": item, "price": p} for item, p in [(266, 1.0), ("abc", 0.0), ("zzz", 9.5), ("1.5", None)]
    ]
    candidates.append({"item": 267, "price": 3.0, "rating": 5})  # overrides the context's rating
    ranked = predict(server, {"context": context, "candidates": candidates})
    flat = predict(server, {"records": [{**context, **c} for c in candidates]})
    assert ranked.status_code == flat.status_code == 200
    assert ranked.json()["probabilities"] == flat.json()["probabilities"]
    assert ranked.json()["oov_fields"] == flat.json()["oov_fields"] == {"item": 1}


def test_info_and_metrics_over_http(server: str, bundle: TinyBundle) -> None:
    import httpx

    info = httpx.get(f"{server}/info").json()
    assert info["model_version"] == bundle.version and info["feature_store"] == "embedded"
    metrics = httpx.get(f"{server}/metrics").text
    assert f'version="{bundle.version}"' in metrics and "dlf_inference_latency_seconds_count" in metrics
