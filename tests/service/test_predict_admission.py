"""/predict under a busy pool: 503 + Retry-After when the queue is full, dropped when the client left."""

from __future__ import annotations

import asyncio
import json
import threading

import numpy as np

from service.model_holder import LoadedModel
from service.testing import TinyBundle, post_scope

RECORD = {"user": "u1", "item": 266, "daytime": "morning", "city": "paris", "price": 3.5, "rating": 4}
HELD_USER = "u3"  # a request whose first row has this user blocks its worker until released


class GatedModel:
    """Stands in for the served LoadedModel; calls with the held user wait on the gate."""

    def __init__(self, model: LoadedModel) -> None:
        self.model = model
        self.version, self.schema, self.bundle_dir = model.version, model.schema, model.bundle_dir
        self.providers, self.provider = model.providers, model.provider
        self.held_id = 3  # id of "u3" in the tiny vocab
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.rows_seen: list[int] = []

    def run(self, cat_ids: np.ndarray, numerics: np.ndarray) -> np.ndarray:
        self.rows_seen.append(int(cat_ids.shape[0]))
        if int(cat_ids[0, 0]) == self.held_id:
            self.entered.set()
            assert self.gate.wait(30)
        return self.model.run(cat_ids, numerics)


async def gated_client(make_client, **settings):
    # inline_rows=0: a held call on the event loop thread would block the test itself
    client = await make_client(inference_workers=1, inline_rows=0, **settings)
    state = client.app.state.dlf
    gated = GatedModel(state.holder.current)
    state.holder.swap(gated)
    return client, state, gated


async def hold_the_worker(client, gated: GatedModel) -> asyncio.Future:
    held = asyncio.ensure_future(client.post("/predict", json={"records": [{**RECORD, "user": HELD_USER}]}))
    assert await asyncio.to_thread(gated.entered.wait, 30)
    return held


async def wait_queued(state, rows: int) -> None:
    """Until ``rows`` rows wait in the batcher's queue (fails after ~2 s)."""
    for _ in range(200):
        if state.batcher.queued_rows == rows:
            return
        await asyncio.sleep(0.01)
    assert state.batcher.queued_rows == rows


async def test_full_queue_answers_503_with_retry_after_and_counts_it(
    make_client, bundle_a: TinyBundle
) -> None:
    client, state, gated = await gated_client(make_client, max_queued_rows=3)
    try:
        held = await hold_the_worker(client, gated)
        queued = asyncio.ensure_future(client.post("/predict", json={"records": [RECORD] * 3}))
        await wait_queued(state, 3)
        r = await asyncio.wait_for(client.post("/predict", json={"records": [RECORD]}), 10)
        assert r.status_code == 503, r.text
        assert int(r.headers["retry-after"]) >= 1
        # the client reconnects, so its retry can land on a less busy process or replica
        assert r.headers["connection"] == "close"
        assert "queued" in r.json()["detail"]
        # refused before its body is read: not even parsed (this one is not JSON at all)
        unread = await client.post(
            "/predict", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert unread.status_code == 503 and unread.headers["retry-after"]
        assert unread.headers["connection"] == "close"
        gated.gate.set()
        assert (await held).status_code == 200 and (await queued).status_code == 200
    finally:
        gated.gate.set()
    text = (await client.get("/metrics")).text
    assert "dlf_rejected_requests_total 2.0" in text
    assert 'dlf_requests_total{endpoint="/predict",status="503"} 2.0' in text
    spec = (await client.get("/openapi.json")).json()["paths"]["/predict"]["post"]["responses"]
    assert {"200", "413", "422", "499", "503"} <= set(spec)


async def test_disconnected_client_is_dropped_before_inference(make_client, bundle_a: TinyBundle) -> None:
    client, state, gated = await gated_client(make_client)
    app = client.app
    body = json.dumps({"records": [RECORD] * 5}).encode()
    left = asyncio.Event()
    sent: list[dict] = []
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict:
        if messages:
            return messages.pop(0)
        await left.wait()  # the client hangs up while its request waits for the busy worker
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = post_scope("/predict", body)
    try:
        held = await hold_the_worker(client, gated)
        call = asyncio.ensure_future(app(scope, receive, send))
        await wait_queued(state, 5)
        left.set()
        await asyncio.sleep(0.05)
        gated.gate.set()
        await asyncio.wait_for(call, 10)
        assert (await held).status_code == 200
    finally:
        gated.gate.set()
    assert sent[0]["status"] == 499
    assert gated.rows_seen == [1]  # the 5 rows of the departed client never reached the model
    text = (await client.get("/metrics")).text
    assert "dlf_dropped_requests_total 1.0" in text


async def test_a_small_body_behind_a_long_queue_is_refused_before_it_is_read(
    make_client, bundle_a: TinyBundle
) -> None:
    from service.batcher import BatchCost

    client, state, gated = await gated_client(make_client, queue_factor=1.0, queue_floor_ms=0, max_queue_ms=0)
    try:
        held = await hold_the_worker(client, gated)
        queued = asyncio.ensure_future(client.post("/predict", json={"records": [RECORD] * 50}))
        await wait_queued(state, 50)
        assert state.batcher.bytes_per_row is not None  # learnt from the two admitted bodies
        state.batcher.cost = BatchCost()
        state.batcher.cost.observe(10, 0.010)  # as if measured: 1 ms per row
        state.batcher.cost.observe(20, 0.020)
        # 9 bytes hold at most one row: 1 ms of its own behind 50 ms of queue -> refused unparsed
        unread = await client.post("/predict", content=b"{not json", headers={"content-type": "application/json"})
        assert unread.status_code == 503 and int(unread.headers["retry-after"]) >= 1
        # a body big enough for 60 rows may be worth the wait: it is read, and the exact count decides
        big = asyncio.ensure_future(client.post("/predict", json={"records": [RECORD] * 60}))
        await wait_queued(state, 110)
        gated.gate.set()
        assert [(await f).status_code for f in (held, queued, big)] == [200, 200, 200]
    finally:
        gated.gate.set()
    assert state.batcher.rejected == 1
