"""Hot reload through the admin API, in-process (real lifespan, real ONNX sessions, embedded vocab)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from service.contract import pointer_history, read_current
from service.lifecycle_testing import corrupt_bundle, other_schema_bundle
from service.testing import VERSION_A, VERSION_B, TinyBundle

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
RECORDS = [
    {"user": "u1", "item": 266, "daytime": "morning", "city": "paris", "price": 3.5, "rating": 4},
    {"user": "u3", "item": "abc", "daytime": None, "city": "oslo", "price": None, "rating": "2"},
]


def reloads(client, result: str) -> float:
    return (
        client.app.state.dlf.metrics.registry.get_sample_value("dlf_reloads_total", {"result": result}) or 0.0
    )


async def predict(client) -> dict:
    r = await client.post("/predict", json={"records": RECORDS})
    assert r.status_code == 200, r.text
    return r.json()


async def test_admin_requires_a_token(make_client, bundle_b: TinyBundle) -> None:
    client = await make_client(admin_token=TOKEN)
    for method, path in (("POST", "/admin/reload"), ("POST", "/admin/rollback"), ("DELETE", "/admin/shadow")):
        missing = await client.request(method, path)
        assert missing.status_code == 401, (path, missing.text)
        assert missing.headers["www-authenticate"] == "Bearer"
        wrong = await client.request(method, path, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 403, (path, wrong.text)
    assert (await predict(client))["model_version"] == VERSION_A  # nothing moved


async def test_admin_disabled_without_configured_token(make_client, bundle_b: TinyBundle) -> None:
    client = await make_client()
    r = await client.post("/admin/reload", json={"version": VERSION_B}, headers=AUTH)
    assert r.status_code == 404 and "DLF_ADMIN_TOKEN" in r.json()["detail"]
    assert (await predict(client))["model_version"] == VERSION_A


async def test_reload_version_swaps_and_scores_with_it(make_client, bundle_b: TinyBundle) -> None:
    client = await make_client(admin_token=TOKEN)
    before = await predict(client)
    r = await client.post("/admin/reload", json={"version": VERSION_B}, headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json()["result"] == "ok" and r.json()["previous_version"] == VERSION_A
    after = await predict(client)
    assert after["model_version"] == VERSION_B
    np.testing.assert_allclose(after["probabilities"], bundle_b.reference(RECORDS), atol=1e-6)
    assert not np.allclose(after["probabilities"], before["probabilities"], atol=1e-3)
    again = await client.post("/admin/reload", json={"version": VERSION_B}, headers=AUTH)
    assert again.json()["result"] == "unchanged"
    assert reloads(client, "ok") == 1 and reloads(client, "unchanged") == 1
    info_metric = client.app.state.dlf.metrics.registry.get_sample_value
    assert info_metric("dlf_model_info", {"version": VERSION_B, "provider": "CPUExecutionProvider"}) == 1
    assert info_metric("dlf_model_info", {"version": VERSION_A, "provider": "CPUExecutionProvider"}) is None
    info = (await client.get("/info")).json()
    assert info["model_version"] == VERSION_B and info["lifecycle"]["previous_version"] == VERSION_A
    # plain reload (no version) goes back to CURRENT, which still names A
    r = await client.post("/admin/reload", headers=AUTH)
    assert r.status_code == 200 and r.json()["model_version"] == VERSION_A


async def test_old_vocab_released_after_drain(make_client, bundle_b: TinyBundle) -> None:
    client = await make_client(admin_token=TOKEN)
    store = client.app.state.dlf.store
    await client.post("/admin/reload", json={"version": VERSION_B}, headers=AUTH)
    for _ in range(100):
        if (await store.status(VERSION_A)).ready is False:
            break
        await asyncio.sleep(0.01)
    assert (await store.status(VERSION_A)).ready is False  # A's vocab dropped once nothing used it
    assert (await store.status(VERSION_B)).ready is True


@pytest.mark.parametrize("make_bad", [corrupt_bundle, other_schema_bundle], ids=["corrupt", "schema"])
async def test_bad_bundles_are_refused(make_client, bundle_a: TinyBundle, registry: Path, make_bad) -> None:
    bad = make_bad(registry)
    client = await make_client(admin_token=TOKEN)
    r = await client.post("/admin/reload", json={"version": bad.name}, headers=AUTH)
    assert r.status_code == 409, r.text
    reason = r.json()["detail"]
    assert reason.startswith("refused:") and bad.name in reason
    assert ("schema-incompatible" in reason) == (make_bad is other_schema_bundle)
    assert reloads(client, "refused") == 1
    body = await predict(client)
    assert body["model_version"] == VERSION_A
    np.testing.assert_allclose(body["probabilities"], bundle_a.reference(RECORDS), atol=1e-6)
    assert (await client.get("/info")).json()["lifecycle"]["last_reload"]["result"] == "refused"


async def test_unknown_and_malformed_versions(make_client, bundle_a: TinyBundle) -> None:
    client = await make_client(admin_token=TOKEN)
    r = await client.post("/admin/reload", json={"version": "20990101T000000Z-00000000"}, headers=AUTH)
    assert r.status_code == 404
    r = await client.post("/admin/reload", json={"version": "../../etc"}, headers=AUTH)
    assert r.status_code == 422
    r = await client.post("/admin/reload", json={"versoin": VERSION_A}, headers=AUTH)
    assert r.status_code == 422  # unknown key named, not silently ignored


async def test_rollback_returns_previous_and_moves_current(
    make_client, bundle_b: TinyBundle, registry: Path
) -> None:
    client = await make_client(admin_token=TOKEN)
    await client.post("/admin/reload", json={"version": VERSION_B}, headers=AUTH)
    r = await client.post("/admin/rollback", headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json()["model_version"] == VERSION_A and r.json()["pointer_written"] is True
    assert (await predict(client))["model_version"] == VERSION_A
    assert read_current(registry) == VERSION_A
    assert pointer_history(registry)[-1]["reason"] == "rollback"
    r = await client.post("/admin/rollback", json={"version": VERSION_B}, headers=AUTH)
    assert r.json()["model_version"] == VERSION_B and read_current(registry) == VERSION_B


async def test_rollback_without_history_is_refused(make_client, bundle_a: TinyBundle) -> None:
    client = await make_client(admin_token=TOKEN)
    r = await client.post("/admin/rollback", headers=AUTH)
    assert r.status_code == 409 and "no previous version" in r.json()["detail"]


async def test_old_vocab_kept_while_a_request_holds_the_old_model(make_client, bundle_b: TinyBundle) -> None:
    client = await make_client(admin_token=TOKEN)
    state = client.app.state.dlf
    model, store, _ = state.serving()  # a request that started on A and has not finished
    state.holder.acquire(model)
    try:
        assert model.version == VERSION_A
        await client.post("/admin/reload", json={"version": VERSION_B}, headers=AUTH)
        await asyncio.sleep(0.2)
        assert state.holder.in_flight(VERSION_A) == 1
        assert (await store.status(VERSION_A)).ready  # not released under the running request
        lookup = await store.lookup(VERSION_A, {"user": {"u1"}})
        assert lookup.ids["user"] == {"u1": 1}
    finally:
        state.holder.release(model)
    for _ in range(100):
        if not (await store.status(VERSION_A)).ready:
            break
        await asyncio.sleep(0.01)
    assert not (await store.status(VERSION_A)).ready  # released once the request finished
