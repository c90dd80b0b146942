"""Reload triggers in-process: polling CURRENT, Redis pub/sub notices (real Redis), shadow scoring."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import numpy as np
import redis

from service.contract import set_current, write_current
from service.lifecycle_testing import other_schema_bundle
from service.redis_store import connect, publish_vocab
from service.testing import VERSION_A, VERSION_B, TinyBundle

REDIS_URL = "redis://127.0.0.1:6379"
TOKEN = "tok"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
RECORDS = [
    {"user": "u2", "item": 267, "daytime": "evening", "city": "paris", "price": 1.0, "rating": 3},
    {"user": "u9", "item": "zzz", "daytime": "night", "city": "oslo", "price": 20, "rating": 5},
]


async def served_version(client, want: str, timeout: float = 5.0) -> str:
    """Poll /predict until it answers with ``want`` (or time out); returns the last version seen."""
    deadline = time.monotonic() + timeout
    version = ""
    while time.monotonic() < deadline:
        version = (await client.post("/predict", json={"records": RECORDS})).json()["model_version"]
        if version == want:
            break
        await asyncio.sleep(0.02)
    return version


async def test_polling_follows_current(make_client, bundle_b: TinyBundle, registry: Path) -> None:
    client = await make_client(reload_poll_seconds=0.05)
    assert await served_version(client, VERSION_A, timeout=0.1) == VERSION_A
    set_current(registry, VERSION_B, reason="test")
    assert await served_version(client, VERSION_B) == VERSION_B
    body = (await client.post("/predict", json={"records": RECORDS})).json()
    np.testing.assert_allclose(body["probabilities"], bundle_b.reference(RECORDS), atol=1e-6)
    assert (await client.get("/info")).json()["lifecycle"]["last_reload"]["source"] == "poll"


async def test_polling_does_not_undo_an_explicit_reload(make_client, bundle_b: TinyBundle) -> None:
    client = await make_client(reload_poll_seconds=0.05, admin_token=TOKEN)
    r = await client.post("/admin/reload", json={"version": VERSION_B}, headers=AUTH)
    assert r.status_code == 200
    await asyncio.sleep(0.3)  # several poll periods; CURRENT still says A but did not move
    assert (await client.post("/predict", json={"records": RECORDS})).json()["model_version"] == VERSION_B


async def _wait_subscribed(client) -> None:
    reloader = client.app.state.dlf.reloader
    await asyncio.wait_for(reloader.subscribed.wait(), 5.0)


async def test_pubsub_notice_reloads(make_client, bundle_b: TinyBundle, redis_prefix: str) -> None:
    writer = connect(REDIS_URL, timeout_s=2.0)
    for bundle in (bundle_b.registry / VERSION_A, bundle_b.path):
        await publish_vocab(writer, bundle, prefix=redis_prefix)
    await writer.aclose()
    client = await make_client(redis_url=REDIS_URL, redis_prefix=redis_prefix, admin_token=TOKEN)
    await _wait_subscribed(client)
    write_current(bundle_b.registry, VERSION_B)
    with redis.Redis.from_url(REDIS_URL) as r:
        assert r.publish(f"{redis_prefix}reload", json.dumps({"version": VERSION_B})) == 1
    assert await served_version(client, VERSION_B) == VERSION_B
    body = (await client.post("/predict", json={"records": RECORDS})).json()
    np.testing.assert_allclose(body["probabilities"], bundle_b.reference(RECORDS), atol=1e-6)
    assert (await client.get("/info")).json()["lifecycle"]["last_reload"]["source"] == "pubsub"
    # a rollback moves CURRENT and tells every replica on the channel (here: this one)
    r = await client.post("/admin/rollback", headers=AUTH)
    assert r.status_code == 200 and r.json()["model_version"] == VERSION_A
    assert r.json()["notified"] == 1


async def test_pubsub_refuses_version_without_published_vocab(
    make_client, bundle_b: TinyBundle, redis_prefix: str
) -> None:
    writer = connect(REDIS_URL, timeout_s=2.0)
    await publish_vocab(writer, bundle_b.registry / VERSION_A, prefix=redis_prefix)  # A only
    await writer.aclose()
    client = await make_client(redis_url=REDIS_URL, redis_prefix=redis_prefix)
    await _wait_subscribed(client)
    with redis.Redis.from_url(REDIS_URL) as r:
        r.publish(f"{redis_prefix}reload", json.dumps({"version": VERSION_B}))
    metrics = client.app.state.dlf.metrics.registry
    for _ in range(200):
        if metrics.get_sample_value("dlf_reloads_total", {"result": "refused"}):
            break
        await asyncio.sleep(0.02)
    assert metrics.get_sample_value("dlf_reloads_total", {"result": "refused"}) == 1
    last = (await client.get("/info")).json()["lifecycle"]["last_reload"]
    assert "not published" in last["reason"]
    assert (await client.post("/predict", json={"records": RECORDS})).json()["model_version"] == VERSION_A


async def test_shadow_compares_sampled_traffic(make_client, bundle_b: TinyBundle) -> None:
    client = await make_client(admin_token=TOKEN)
    r = await client.post("/admin/shadow", json={"version": VERSION_B, "sample_rate": 1.0}, headers=AUTH)
    assert r.status_code == 200, r.text
    live = []
    for i in range(5):
        rows = [{**RECORDS[0], "rating": i}, RECORDS[1]]
        body = (await client.post("/predict", json={"records": rows})).json()
        assert body["model_version"] == VERSION_A  # shadow never answers
        live.append((rows, body["probabilities"]))
    state = client.app.state.dlf
    await state.shadow.drain()
    shadow = (await client.get("/info")).json()["shadow"]
    rows_all = [row for rows, _ in live for row in rows]
    live_p = np.array([p for _, probs in live for p in probs])
    shadow_p = bundle_b.reference(rows_all)
    assert shadow["version"] == VERSION_B and shadow["rows_compared"] == 10
    assert np.isclose(shadow["mean_abs_diff"], np.abs(live_p - shadow_p).mean(), atol=1e-6)
    assert shadow["mean_abs_diff"] > 0.01  # the two versions really differ
    assert np.isclose(shadow["mean_shadow_probability"], shadow_p.mean(), atol=1e-6)
    assert np.isclose(shadow["mean_live_probability"], live_p.mean(), atol=1e-6)
    agree = ((live_p >= 0.5) == (shadow_p >= 0.5)).mean()
    assert np.isclose(shadow["decision_agreement"], agree)
    metrics = state.metrics.registry
    assert metrics.get_sample_value("dlf_shadow_comparisons_total", {"version": VERSION_B}) == 10
    assert metrics.get_sample_value("dlf_shadow_abs_diff_count", {"version": VERSION_B}) == 10
    assert np.isclose(
        metrics.get_sample_value("dlf_shadow_abs_diff_sum", {"version": VERSION_B}),
        np.abs(live_p - shadow_p).sum(),
        atol=1e-5,
    )
    stopped = await client.delete("/admin/shadow", headers=AUTH)
    assert stopped.status_code == 200 and stopped.json()["rows_compared"] == 10
    assert (await client.get("/info")).json()["shadow"] is None
    assert (await client.delete("/admin/shadow", headers=AUTH)).status_code == 404


async def test_shadow_sampling_and_refusal(make_client, bundle_b: TinyBundle, registry: Path) -> None:
    bad = other_schema_bundle(registry)
    client = await make_client(admin_token=TOKEN)
    r = await client.post("/admin/shadow", json={"version": bad.name, "sample_rate": 0.5}, headers=AUTH)
    assert r.status_code == 409 and "schema-incompatible" in r.json()["detail"]
    r = await client.post("/admin/shadow", json={"version": VERSION_B, "sample_rate": 1.5}, headers=AUTH)
    assert r.status_code == 422
    r = await client.post("/admin/shadow", json={"version": VERSION_B, "sample_rate": 0.25}, headers=AUTH)
    assert r.status_code == 200
    for _ in range(80):
        await client.post("/predict", json={"records": RECORDS[:1]})
    state = client.app.state.dlf
    await state.shadow.drain()
    compared = (await client.get("/info")).json()["shadow"]["requests_compared"]
    assert 5 <= compared <= 40  # ~20 expected at 25 %; 0 or all would mean sampling is broken
