"""collect (impressions + feedback -> Parquet), collected training data, reliability/ECE.

Real Redis at 6379 under a unique prefix; impressions are written by the
service's own ImpressionLogger and feedback by its record_feedback.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import redis
import yaml

from service.feedback import record_feedback
from service.impressions import ImpressionLogger, new_impressions, now_ms
from service.redis_store import connect
from service.testing import VERSION_A, write_tiny_bundle
from training.fitting.reliability import plot_reliability, reliability_table
from training.lifecycle.collect import STATE_FILE, collect, read_state
from training.lifecycle.collected import collected_dataset

REDIS_URL = "redis://127.0.0.1:6379/0"
ROWS = [
    {"user": "u1", "item": 266, "daytime": "morning", "city": "paris", "price": 3.5, "rating": 4},
    {"user": "u9", "item": "1.5", "daytime": None, "city": "rome", "price": None, "rating": "2"},
    {"user": "u3", "item": 267.0, "daytime": "night", "city": "oslo", "price": 0, "rating": -1.25},
]


@pytest.fixture
def prefix() -> Iterator[str]:
    prefix = f"dlf-test-{uuid.uuid4().hex[:12]}:"
    yield prefix
    with redis.Redis.from_url(REDIS_URL) as client:
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)


async def _serve_and_click(prefix: str, window_ms: int) -> tuple[list[list[str]], dict[str, int]]:
    """Two logged requests of 3 rows; feedback with in-window, late, explicit-negative and no events."""
    logger = ImpressionLogger(connect(REDIS_URL), prefix=prefix)
    await logger.start()
    batches = []
    for probs in ([0.9, 0.2, 0.5], [0.1, 0.7, 0.3]):
        batch, ids = new_impressions(3)
        logger.log(batch, VERSION_A, ROWS, probs)
        batches.append(ids)
    await logger.flush(5)
    served = now_ms()
    (a0, a1, _), (b0, b1, b2) = batches
    client = logger.client
    # in window, explicit non-click, click after the window, in window, (a2 and b2: no feedback)
    await record_feedback(client, prefix, [(a0, True), (a1, False)], at_ms=served + 10, ttl_s=60)
    await record_feedback(client, prefix, [(b0, True)], at_ms=served + window_ms + 5_000, ttl_s=60)
    await record_feedback(client, prefix, [(b1, True)], at_ms=served + window_ms // 2, ttl_s=60)
    await logger.stop()
    expected = {a0: 1, a1: 0, batches[0][2]: 0, b0: 0, b1: 1, b2: 0}
    return batches, expected


def test_collect_labels_window_and_is_idempotent(tmp_path: Path, prefix: str) -> None:
    registry = tmp_path / "registry"
    write_tiny_bundle(registry)
    window_s = 0.3
    _, expected = asyncio.run(_serve_and_click(prefix, int(window_s * 1000)))
    out = tmp_path / "collected"
    early = collect(REDIS_URL, out, registry=registry, prefix=prefix, label_window_s=3600)
    assert early.rows == 0 and not (out / STATE_FILE).exists()  # windows still open: nothing final yet
    time.sleep(window_s + 0.1)
    first = collect(REDIS_URL, out, registry=registry, prefix=prefix, label_window_s=window_s)
    assert first.rows == 6 and first.positives == 2 and first.new_shards == ["shard-000001.parquet"]
    table = pq.read_table(out / "shard-000001.parquet").to_pylist()
    assert {r["impression_id"]: r["label"] for r in table} == expected
    row0, row1 = table[0], table[1]
    assert row0["item"] == "266" and row0["price"] == 3.5 and row0["model_version"] == VERSION_A
    assert row1["daytime"] == "__missing__" and row1["price"] is None and row1["rating"] == 2.0
    assert [r["probability"] for r in table] == [0.9, 0.2, 0.5, 0.1, 0.7, 0.3]
    spec = yaml.safe_load((out / "schema.yaml").read_text())
    assert spec["label"] == "label" and [f["name"] for f in spec["fields"]][:2] == ["user", "price"]

    again = collect(REDIS_URL, out, registry=registry, prefix=prefix, label_window_s=window_s)
    assert again.rows == 0 and again.new_shards == []
    state = read_state(out)
    assert len(state["shards"]) == 1 and state["last_id"] == first.last_id
    assert sorted(p.name for p in out.iterdir()) == [STATE_FILE, "schema.yaml", "shard-000001.parquet"]

    # more traffic later: only the new impressions are added, in a second shard
    asyncio.run(_serve_and_click(prefix, int(window_s * 1000)))
    time.sleep(window_s + 0.1)
    more = collect(REDIS_URL, out, registry=registry, prefix=prefix, label_window_s=window_s)
    assert more.rows == 6 and more.new_shards == ["shard-000002.parquet"]
    ids = [
        r["impression_id"]
        for p in ("shard-000001", "shard-000002")
        for r in pq.read_table(out / f"{p}.parquet").to_pylist()
    ]
    assert len(ids) == len(set(ids)) == 12


def test_collected_dataset_mixes_shards_with_base_csv(tmp_path: Path, prefix: str) -> None:
    registry = tmp_path / "registry"
    write_tiny_bundle(registry)
    asyncio.run(_serve_and_click(prefix, 300))
    time.sleep(0.4)
    out = tmp_path / "collected"
    collect(REDIS_URL, out, registry=registry, prefix=prefix, label_window_s=0.3)
    base = tmp_path / "base.csv"
    base.write_text(
        "y,city,item,user,daytime,price,rating\n1,paris,266,u1,evening,1.5,3\n0,oslo,abc,u2,,,1\n"
    )
    base_schema = tmp_path / "base.yaml"
    fields = [("city", "categorical"), ("item", "categorical"), ("user", "categorical")]
    fields += [("daytime", "categorical"), ("price", "numeric"), ("rating", "numeric")]
    base_schema.write_text(
        yaml.safe_dump({"label": "y", "fields": [{"name": n, "type": t} for n, t in fields]})
    )
    data, schema, counts = collected_dataset(
        out, tmp_path / "train.parquet", base=base, base_schema=base_schema
    )
    assert counts == {"collected": 6, "base": 2} and schema == out / "schema.yaml"
    rows = pq.read_table(data).to_pylist()
    assert len(rows) == 8 and set(rows[0]) == {"label", "user", "price", "item", "daytime", "rating", "city"}
    assert rows[6] == {
        "label": 1,
        "user": "u1",
        "price": 1.5,
        "item": "266",
        "daytime": "evening",
        "rating": 3.0,
        "city": "paris",
    }
    assert rows[7]["daytime"] == "__missing__" and rows[7]["price"] is None
    alone, _, counts = collected_dataset(out, tmp_path / "alone.parquet")
    assert counts == {"collected": 6, "base": 0} and pq.read_metadata(alone).num_rows == 6
    base_schema.write_text(
        yaml.safe_dump({"label": "y", "fields": [{"name": n, "type": t} for n, t in fields[:-1]]})
    )
    with pytest.raises(ValueError, match="rating"):
        collected_dataset(out, tmp_path / "bad.parquet", base=base, base_schema=base_schema)
    assert not (tmp_path / "bad.parquet").exists()


def test_reliability_table_and_ece() -> None:
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 1, 40_000)
    calibrated = reliability_table(rng.random(p.size) < p, p)
    halved = reliability_table(rng.random(p.size) < p / 2, p)  # the model predicts twice the real rate
    assert calibrated["ece"] < 0.02 and halved["ece"] == pytest.approx(0.25, abs=0.02)
    assert sum(b["rows"] for b in calibrated["bins"]) == p.size and len(calibrated["bins"]) == 10
    top = calibrated["bins"][-1]
    assert top["lo"] == 0.9 and top["mean_predicted"] == pytest.approx(0.95, abs=0.01)
    assert reliability_table([1, 0], [1.0, 0.0])["ece"] == 0.0
    assert reliability_table([0, 0], [1.0, 1.0])["ece"] == 1.0
    with pytest.raises(ValueError):
        reliability_table([1, 0], [0.5])


def test_reliability_png(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    p = rng.uniform(0, 1, 2000)
    plot_reliability(reliability_table(rng.random(p.size) < p, p), tmp_path / "r.png", title="t")
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
