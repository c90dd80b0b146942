"""The promotion gate and the promotion itself.

``compare_bundles`` scores the candidate and the current bundle through
onnxruntime on the *same* labelled rows (each bundle encodes them with its own
vocabulary, as serving would). ``decide`` applies the gate: promote only if
candidate AUC >= current AUC - tolerance. ``promote`` then publishes the
candidate's vocab to Redis under its own version (when a URL is given), moves
``CURRENT`` (atomic, recorded in ``HISTORY.jsonl``), prunes old versions and
publishes a reload notice on ``<prefix>reload``. ``promotion.json`` is written
next to the candidate's files either way.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pyarrow as pa

from service.contract import (
    CAT_INPUT,
    NUM_INPUT,
    PROB_OUTPUT,
    ReloadNotice,
    atomic_write_text,
    load_schema,
    prune_versions,
    publish_vocab,
    reload_channel,
    set_current,
)
from training.bundle.evaluate import space_from_bundle
from training.fitting.metrics import auc_logloss
from training.fitting.reliability import reliability_table

log = logging.getLogger("training")

PROMOTION_FILE = "promotion.json"


def now() -> str:
    return datetime.now(UTC).isoformat()


def score_bundle(bundle_dir: str | Path, batches: Iterable[pa.RecordBatch]) -> dict[str, float]:
    """AUC / logloss / rows of a bundle's model.onnx (CPU onnxruntime) on labelled batches."""
    bundle_dir = Path(bundle_dir)
    space = space_from_bundle(bundle_dir)
    sess = ort.InferenceSession(str(bundle_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    inputs = {i.name for i in sess.get_inputs()}
    ys, ps = [], []
    for batch in batches:
        if batch.num_rows == 0:
            continue
        cat, num, y = space.encode(batch)
        feeds = {}
        if CAT_INPUT in inputs:
            feeds[CAT_INPUT] = cat
        if NUM_INPUT in inputs:
            feeds[NUM_INPUT] = num
        (p,) = sess.run([PROB_OUTPUT], feeds)
        ys.append(y)
        ps.append(p)
    if not ys:
        raise ValueError("evaluation set holds no rows")
    y, p = np.concatenate(ys), np.concatenate(ps)
    return auc_logloss(y, p) | {"ece": reliability_table(y, p)["ece"]}


@dataclass
class Decision:
    promote: bool
    reason: str


def decide(candidate_auc: float, current_auc: float | None, tolerance: float) -> Decision:
    """The gate: candidate AUC >= current AUC - tolerance (no current model: promote)."""
    if current_auc is None:
        return Decision(True, "no current model in the registry")
    floor = current_auc - tolerance
    if candidate_auc >= floor:
        return Decision(
            True, f"candidate AUC {candidate_auc:.6f} >= current {current_auc:.6f} - tolerance {tolerance:g}"
        )
    return Decision(
        False,
        f"candidate AUC {candidate_auc:.6f} < current {current_auc:.6f} - tolerance {tolerance:g} "
        f"(short by {floor - candidate_auc:.6f})",
    )


def compare_bundles(
    candidate: Path, current: Path | None, batches: Callable[[], Iterable[pa.RecordBatch]]
) -> dict[str, Any]:
    """Both bundles on the same rows; ``batches`` is called once per bundle (a fresh iterator each)."""
    out: dict[str, Any] = {"candidate": score_bundle(candidate, batches())}
    if current is not None:
        out["current"] = score_bundle(current, batches())
        if out["current"]["rows"] != out["candidate"]["rows"]:
            raise RuntimeError("candidate and current were scored on different row counts")
    return out


def write_record(bundle_dir: Path, record: dict[str, Any]) -> Path:
    path = bundle_dir / PROMOTION_FILE
    atomic_write_text(path, json.dumps(record, indent=2, default=str) + "\n")
    return path


def publish_vocab_sync(bundle_dir: Path, redis_url: str, prefix: str) -> dict[str, int]:
    """``service.contract.publish_vocab`` from synchronous code (fields -> value counts)."""
    import redis.asyncio as aioredis

    async def _run() -> dict[str, int]:
        client = aioredis.Redis.from_url(redis_url, decode_responses=True, socket_timeout=10.0)
        try:
            return await publish_vocab(client, bundle_dir, prefix)
        finally:
            await client.aclose()

    return asyncio.run(_run())


def publish_notice(redis_url: str, channel: str, notice: ReloadNotice) -> int:
    """PUBLISH the reload notice; returns how many subscribers (service replicas) received it."""
    import redis

    with redis.Redis.from_url(redis_url, socket_timeout=10) as client:
        return int(client.publish(channel, notice.to_json()))


def promote(
    registry: Path,
    candidate: Path,
    *,
    redis_url: str | None = None,
    prefix: str = "dlf:",
    channel: str | None = None,
    keep: int = 10,
) -> dict[str, Any]:
    """Vocab to Redis (own version) -> CURRENT -> prune -> reload notice. Returns what happened."""
    version = load_schema(candidate).version
    facts: dict[str, Any] = {}
    if redis_url:
        facts["vocab_published"] = publish_vocab_sync(candidate, redis_url, prefix)
    facts["previous_version"] = set_current(registry, version, reason="retrain: promoted")
    facts["promoted_at"] = now()
    facts["pruned"] = prune_versions(registry, keep)
    if redis_url:
        channel = channel or reload_channel(prefix)
        notice = ReloadNotice(
            version, previous=facts["previous_version"], reason="retrain: promoted", at=facts["promoted_at"]
        )
        facts["notice"] = {"channel": channel, "receivers": publish_notice(redis_url, channel, notice)}
    log.info("promoted %s (was %s)", version, facts["previous_version"])
    return facts
