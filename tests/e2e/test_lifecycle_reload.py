"""Hot reload end to end: a real uvicorn process, admin API over HTTP, traffic during 10 reloads.

One server (embedded vocab, admin token) serves all tests of this module; each
test first brings it to the state it needs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from serving_support import predict, sample_records, uvicorn_server

from service.contract import read_current
from service.lifecycle_testing import corrupt_bundle, other_schema_bundle
from service.testing import VERSION_A, VERSION_B, TinyBundle, write_tiny_bundle

pytestmark = pytest.mark.e2e

TOKEN = "e2e-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
RECORDS = sample_records(6, seed=11)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, TinyBundle]:
    registry = tmp_path_factory.mktemp("registry")
    a = write_tiny_bundle(registry, version=VERSION_A, seed=0, make_current=True)
    b = write_tiny_bundle(registry, version=VERSION_B, seed=1, make_current=False)
    return {VERSION_A: a, VERSION_B: b}


@pytest.fixture(scope="module")
def url(bundles: dict[str, TinyBundle], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    registry = bundles[VERSION_A].registry
    env = {"DLF_REGISTRY": str(registry), "DLF_ADMIN_TOKEN": TOKEN, "DLF_MAX_WAIT_MS": "1"}
    with uvicorn_server(env, tmp_path_factory.mktemp("logs") / "lifecycle.log") as base:
        yield base


def admin(url: str, path: str, body: dict | None = None) -> httpx.Response:
    return httpx.post(f"{url}/admin/{path}", json=body, headers=AUTH, timeout=30)


def test_traffic_during_ten_reloads(url: str, bundles: dict[str, TinyBundle]) -> None:
    assert admin(url, "reload", {"version": VERSION_A}).status_code == 200
    expected = {v: b.reference(RECORDS) for v, b in bundles.items()}
    stop = threading.Event()
    results: list[tuple[int, str | None, list[float] | None]] = []
    errors: list[str] = []

    def client_loop() -> None:
        with httpx.Client(base_url=url, timeout=10) as client:
            while not stop.is_set():
                try:
                    r = client.post("/predict", json={"records": RECORDS})
                except httpx.HTTPError as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                body = r.json() if r.status_code == 200 else {}
                results.append((r.status_code, body.get("model_version"), body.get("probabilities")))

    threads = [threading.Thread(target=client_loop) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        reload_answers = []
        for i in range(10):
            time.sleep(0.15)
            version = VERSION_B if i % 2 == 0 else VERSION_A
            r = admin(url, "reload", {"version": version})
            reload_answers.append((r.status_code, r.json().get("result"), r.json().get("model_version")))
        time.sleep(0.15)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert all(a == (200, "ok", VERSION_B if i % 2 == 0 else VERSION_A) for i, a in enumerate(reload_answers))
    assert errors == []
    assert len(results) > 20
    failed = [r for r in results if r[0] != 200]
    assert failed == []
    seen = {version for _, version, _ in results}
    assert seen == {VERSION_A, VERSION_B}  # both versions really answered during the run
    for _, version, probs in results:
        np.testing.assert_allclose(probs, expected[version], atol=1e-5, err_msg=f"scored by {version}?")
    metrics = httpx.get(f"{url}/metrics").text
    info_lines = [line for line in metrics.splitlines() if line.startswith("dlf_model_info{")]
    assert len(info_lines) == 1 and f'version="{VERSION_A}"' in info_lines[0]


@pytest.mark.parametrize("make_bad", [corrupt_bundle, other_schema_bundle], ids=["corrupt-onnx", "schema"])
def test_bad_bundles_refused_old_keeps_answering(url: str, bundles: dict[str, TinyBundle], make_bad) -> None:
    assert admin(url, "reload", {"version": VERSION_A}).status_code == 200
    bad = make_bad(bundles[VERSION_A].registry)
    r = admin(url, "reload", {"version": bad.name})
    assert r.status_code == 409, r.text
    assert bad.name in r.json()["detail"]
    body = predict(url, {"records": RECORDS}).json()
    assert body["model_version"] == VERSION_A
    np.testing.assert_allclose(body["probabilities"], bundles[VERSION_A].reference(RECORDS), atol=1e-5)
    assert 'dlf_reloads_total{result="refused"}' in httpx.get(f"{url}/metrics").text


def test_rollback_returns_previous_version(url: str, bundles: dict[str, TinyBundle]) -> None:
    assert admin(url, "reload", {"version": VERSION_A}).status_code == 200
    assert admin(url, "reload", {"version": VERSION_B}).json()["model_version"] == VERSION_B
    r = admin(url, "rollback")
    assert r.status_code == 200, r.text
    assert r.json()["model_version"] == VERSION_A and r.json()["previous_version"] == VERSION_B
    assert predict(url, {"records": RECORDS}).json()["model_version"] == VERSION_A
    assert read_current(bundles[VERSION_A].registry) == VERSION_A
    assert httpx.get(f"{url}/info").json()["lifecycle"]["previous_version"] == VERSION_B


def test_admin_rejects_missing_and_wrong_tokens(url: str) -> None:
    before = predict(url, {"records": RECORDS}).json()["model_version"]
    for path in ("reload", "rollback", "shadow"):
        assert httpx.post(f"{url}/admin/{path}", json={"version": VERSION_B}).status_code == 401
        wrong = httpx.post(
            f"{url}/admin/{path}", json={"version": VERSION_B}, headers={"Authorization": "Bearer wrong"}
        )
        assert wrong.status_code == 403
    assert httpx.delete(f"{url}/admin/shadow").status_code == 401
    assert predict(url, {"records": RECORDS}).json()["model_version"] == before
