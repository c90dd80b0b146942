"""Impression log + /feedback in-process (real ONNX, real Redis at 6379 under a unique prefix)."""

from __future__ import annotations

import json
import re
import socket

import httpx
import pytest
import redis
from prometheus_client import generate_latest

from service.contract import feedback_key, impression_key
from service.impressions import stream_key
from service.request_log import RequestLogger
from service.testing import VERSION_A, TinyBundle

REDIS_URL = "redis://127.0.0.1:6379"  # the shared Redis; every test uses its own key prefix
ROWS = [
    {"user": "u1", "item": 266, "daytime": "morning", "city": "paris", "price": 3.5, "rating": 4},
    {"user": "u9", "item": "1.5", "daytime": None, "city": "rome", "price": None, "rating": "2"},
    {"user": "u3", "item": 267.0, "daytime": "night", "city": "oslo", "price": 0, "rating": -1.25},
]


def sample(client: httpx.AsyncClient, name: str, **labels: str) -> float:
    """Current value of one series of the app's registry (0 when absent)."""
    value = client.app.state.dlf.metrics.registry.get_sample_value(name, labels)  # type: ignore[attr-defined]
    return value or 0.0


async def served(client: httpx.AsyncClient, rows: list[dict] = ROWS) -> dict:
    r = await client.post("/predict", json={"records": rows})
    assert r.status_code == 200, r.text
    return r.json()


async def flushed(client: httpx.AsyncClient) -> None:
    await client.app.state.dlf.impressions.flush(5.0)  # type: ignore[attr-defined]


async def test_predict_logs_impressions_to_the_stream(make_client, bundle_a: TinyBundle, redis_prefix: str):
    client = await make_client(impressions_redis_url=REDIS_URL, redis_prefix=redis_prefix)
    body = await served(client)
    ids = body["impression_ids"]
    assert len(ids) == 3 and len(set(ids)) == 3
    batch = ids[0].rsplit("-", 1)[0]
    assert ids == [f"{batch}-{i}" for i in range(3)] and re.fullmatch(r"[0-9a-f]{32}", batch)
    await flushed(client)
    with redis.Redis.from_url(REDIS_URL, decode_responses=True) as r:
        ((_, entry),) = r.xrange(stream_key(redis_prefix))
        assert entry["b"] == batch and entry["v"] == VERSION_A
        assert json.loads(entry["rows"]) == ROWS and json.loads(entry["p"]) == body["probabilities"]
        record = json.loads(r.get(impression_key(redis_prefix, batch)))
        assert record["p"] == body["probabilities"] and record["v"] == VERSION_A
        assert 0 < r.ttl(impression_key(redis_prefix, batch)) <= 2 * 24 * 3600
    assert sample(client, "dlf_impressions_logged_total") == 3


async def test_feedback_accepts_once_and_reports_duplicates_and_unknown(
    make_client, bundle_a: TinyBundle, redis_prefix: str
):
    client = await make_client(impressions_redis_url=REDIS_URL, redis_prefix=redis_prefix)
    body = await served(client)
    ids, probs = body["impression_ids"], body["probabilities"]
    batch = ids[0].rsplit("-", 1)[0]
    events = [
        {"impression_id": ids[0], "clicked": True},
        {"impression_id": ids[1], "clicked": False},
        {"impression_id": ids[0], "clicked": False},  # repeat inside the body
        {"impression_id": f"{batch}-7", "clicked": True},  # row out of range
        {"impression_id": "0" * 32 + "-0", "clicked": True},  # never served
        {"impression_id": "not an id", "clicked": True},
    ]
    r = await client.post("/feedback", json={"events": events})  # no flush: the route waits for the writer
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["accepted"] == 2 and out["duplicates"] == [ids[0]]
    assert sorted(out["unknown"]) == sorted([f"{batch}-7", "0" * 32 + "-0", "not an id"])
    again = (await client.post("/feedback", json={"events": events[:2]})).json()
    assert again == {"accepted": 0, "duplicates": [ids[0], ids[1]], "unknown": []}
    with redis.Redis.from_url(REDIS_URL, decode_responses=True) as rc:
        stored = rc.hgetall(feedback_key(redis_prefix, batch))
    assert set(stored) == {"0", "1"} and stored["0"].startswith("1:") and stored["1"].startswith("0:")
    assert sample(client, "dlf_feedback_events_total", result="accepted") == 2
    assert sample(client, "dlf_feedback_events_total", result="duplicate") == 3
    assert sample(client, "dlf_feedback_events_total", result="unknown") == 3
    v = {"version": VERSION_A}
    assert sample(client, "dlf_feedback_probability_count", **v) == 2
    assert sample(client, "dlf_feedback_probability_sum", **v) == pytest.approx(probs[0] + probs[1])
    assert sample(client, "dlf_feedback_clicked_probability_count", **v) == 1
    assert sample(client, "dlf_feedback_clicked_probability_sum", **v) == pytest.approx(probs[0])
    text = generate_latest(client.app.state.dlf.metrics.registry).decode()  # type: ignore[attr-defined]
    assert 'dlf_feedback_probability_count{version="' + VERSION_A + '"} 2.0' in text


async def test_feedback_bad_input_is_422_naming_the_field(
    make_client, bundle_a: TinyBundle, redis_prefix: str
):
    client = await make_client(impressions_redis_url=REDIS_URL, redis_prefix=redis_prefix)
    ok = {"impression_id": "a" * 32 + "-0", "clicked": True}
    cases = [
        ({"events": [ok] * 10_001}, "events"),
        ({"events": [{"impression_id": "x-0", "clicked": "yes"}]}, "clicked"),
        ({"events": [{"clicked": True}]}, "impression_id"),
        ({"events": []}, "events"),
        ({"clicks": [ok]}, "clicks"),
    ]
    for body, needle in cases:
        r = await client.post("/feedback", json=body)
        assert r.status_code == 422, (body, r.text)
        assert needle in r.json()["detail"], r.json()


async def test_feedback_without_redis_is_503_and_predict_still_has_ids(make_client, bundle_a: TinyBundle):
    client = await make_client()  # embedded vocab, no Redis anywhere: no impression log
    assert client.app.state.dlf.impressions is None  # type: ignore[attr-defined]
    body = await served(client)
    assert len(body["impression_ids"]) == 3
    r = await client.post(
        "/feedback", json={"events": [{"impression_id": body["impression_ids"][0], "clicked": True}]}
    )
    assert r.status_code == 503 and "REDIS_URL" in r.json()["detail"]


async def test_sample_rate_zero_logs_nothing_and_feedback_is_unknown(
    make_client, bundle_a: TinyBundle, redis_prefix: str
):
    client = await make_client(
        impressions_redis_url=REDIS_URL, redis_prefix=redis_prefix, impressions_sample_rate=0.0
    )
    body = await served(client)
    r = await client.post(
        "/feedback", json={"events": [{"impression_id": body["impression_ids"][1], "clicked": True}]}
    )
    assert r.json() == {"accepted": 0, "duplicates": [], "unknown": [body["impression_ids"][1]]}
    assert sample(client, "dlf_impressions_sampled_out_total") == 3
    with redis.Redis.from_url(REDIS_URL) as rc:
        assert rc.exists(stream_key(redis_prefix)) == 0


def closed_port_url() -> str:
    """A Redis URL nothing listens on (a port just released by the OS)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"


async def test_unreachable_redis_drops_and_counts_never_fails_predict(make_client, bundle_a: TinyBundle):
    client = await make_client(impressions_redis_url=closed_port_url(), redis_retry_backoff_s=60)
    bodies = [await served(client) for _ in range(5)]
    await flushed(client)
    assert all(len(b["impression_ids"]) == 3 for b in bodies)
    dropped = sample(client, "dlf_impressions_dropped_total", reason="redis_error") + sample(
        client, "dlf_impressions_dropped_total", reason="redis_down"
    )
    assert dropped == 15 and sample(client, "dlf_impressions_logged_total") == 0
    event = {"impression_id": bodies[0]["impression_ids"][0], "clicked": True}
    r = await client.post("/feedback", json={"events": [event]})
    assert r.status_code == 503 and r.headers["retry-after"] == "1"


async def test_stream_is_bounded_by_maxlen(make_client, bundle_a: TinyBundle, redis_prefix: str):
    client = await make_client(
        impressions_redis_url=REDIS_URL, redis_prefix=redis_prefix, impressions_maxlen=10
    )
    for _ in range(400):
        await client.post("/predict", json={"records": ROWS[:1]})
    await flushed(client)
    with redis.Redis.from_url(REDIS_URL) as rc:
        length = rc.xlen(stream_key(redis_prefix))
    # MAXLEN ~ trims whole radix-tree nodes (100 entries by default): bounded, not exact
    assert 10 <= length <= 10 + 100
    assert sample(client, "dlf_impressions_logged_total") == 400


def test_request_log_rotates_and_counts_drops(tmp_path) -> None:
    entry = {
        "request_id": "x" * 32,
        "records": [{"user": "u1", "price": 1.0}] * 4,
        "probabilities": [0.5] * 4,
    }
    rotating = RequestLogger(tmp_path / "a" / "requests.jsonl", max_bytes=2048, backups=2)
    for _ in range(200):  # ~30 KB of lines: many rotations
        rotating.log(entry)
    rotating.close()
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files == ["requests.jsonl", "requests.jsonl.1", "requests.jsonl.2"] and rotating.dropped == 0
    assert all(p.stat().st_size <= 2048 for p in (tmp_path / "a").iterdir())
    assert json.loads((tmp_path / "a" / "requests.jsonl.1").read_text().splitlines()[0]) == entry

    drops: list[int] = []
    tiny = RequestLogger(tmp_path / "b" / "requests.jsonl", max_queue=1, on_drop=lambda: drops.append(1))
    for _ in range(2000):
        tiny.log(entry)
    tiny.close()
    written = len((tmp_path / "b" / "requests.jsonl").read_text().splitlines())
    assert tiny.dropped == len(drops) > 0 and written + tiny.dropped == 2000


async def test_script_and_pipeline_writes_store_the_same(redis_prefix: str) -> None:
    """Standalone Redis gets one script call per batch; the cluster path (a pipeline) must write the same."""
    import redis.asyncio as aioredis

    from service.impressions import ImpressionLogger

    stored = []
    for path in ("script", "pipeline"):
        prefix = f"{redis_prefix}{path}:"
        logger = ImpressionLogger(aioredis.Redis.from_url(REDIS_URL), prefix=prefix, ttl_s=600)
        assert logger._script is not None  # standalone client: the script path by default
        if path == "pipeline":
            logger._script = None  # what a RedisCluster client gets
        await logger.start()
        for i, rows in enumerate((ROWS, ROWS[:1])):
            assert logger.log(f"{i:032x}", VERSION_A, rows, [0.25 + i / 10] * len(rows))
        await logger.flush(5.0)
        await logger.stop()
        with redis.Redis.from_url(REDIS_URL, decode_responses=True) as r:
            entries = [e for _, e in r.xrange(stream_key(prefix))]
            records = [json.loads(r.get(impression_key(prefix, f"{i:032x}"))) for i in range(2)]
            ttls = [r.ttl(impression_key(prefix, f"{i:032x}")) for i in range(2)]
        assert [e["b"] for e in entries] == [f"{i:032x}" for i in range(2)]
        assert json.loads(entries[0]["rows"]) == ROWS and json.loads(entries[1]["p"]) == [0.35]
        assert all(0 < t <= 600 for t in ttls)
        stored.append((entries, [{k: v for k, v in rec.items() if k != "t"} for rec in records]))
    script, pipeline = stored
    drop_t = [[{k: v for k, v in e.items() if k != "t"} for e in s[0]] for s in stored]
    assert drop_t[0] == drop_t[1] and script[1] == pipeline[1]
    assert script[1][0] == {"v": VERSION_A, "p": [0.25, 0.25, 0.25]}


def test_a_write_is_bounded_by_payload_bytes_as_well_as_requests() -> None:
    """A backlog of big requests goes out in several short writes, never one of tens of MB."""
    import redis.asyncio as aioredis

    from service.impressions import WRITE_BYTES, ImpressionLogger

    logger = ImpressionLogger(aioredis.Redis.from_url(REDIS_URL), write_batch=256)
    big = [{"user": "u" * 100, "item": i} for i in range(1000)]  # ~120 kB of JSON per request
    for i in range(20):
        assert logger.log(f"{i:032x}", VERSION_A, big, [0.5] * len(big))
    sizes = []
    while logger._queue:
        batch = logger._take_batch()
        assert batch  # always at least one request, however big
        sizes.append(sum(len(e.rows) for e in batch))
    assert len(sizes) > 1 and all(size <= WRITE_BYTES for size in sizes)
