"""Feedback events joined with logged impressions in Redis (idempotent, first event wins).

For each event the impression id is parsed into ``(batch, row)``; the request's
record ``<prefix>imp:{batch}`` (written by the impression logger) tells whether
the impression is known and gives its model version and probability. Known
events are stored with ``HSETNX <prefix>fb:{batch} <row> "<0|1>:<ms>"``: the first
event of an impression is kept, any later one (or a repeat inside the same
body) is a duplicate and changes nothing. Unknown ids (malformed, never logged,
dropped while Redis was down, expired, row out of range) are reported, never an error.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import redis.asyncio as aioredis

from service.contract import feedback_key, impression_key, parse_impression_id


@dataclass(frozen=True)
class Joined:
    """An accepted event with what was served for it."""

    impression_id: str
    version: str
    probability: float
    clicked: bool


@dataclass
class FeedbackOutcome:
    accepted: list[Joined] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)


async def record_feedback(
    client: aioredis.Redis,
    prefix: str,
    events: Sequence[tuple[str, bool]],
    *,
    at_ms: int,
    ttl_s: int,
) -> FeedbackOutcome:
    """Store ``(impression_id, clicked)`` events; two pipelined round trips whatever their number."""
    out = FeedbackOutcome()
    seen: set[str] = set()
    wanted: list[tuple[str, str, int, bool]] = []  # id, batch, row, clicked
    for impression_id, clicked in events:
        if impression_id in seen:
            out.duplicates.append(impression_id)
            continue
        seen.add(impression_id)
        parsed = parse_impression_id(impression_id)
        if parsed is None:
            out.unknown.append(impression_id)
        else:
            wanted.append((impression_id, parsed[0], parsed[1], clicked))
    if not wanted:
        return out
    batches = list(dict.fromkeys(b for _, b, _, _ in wanted))
    async with client.pipeline(transaction=False) as pipe:  # GETs, not MGET: keys in many cluster slots
        for b in batches:
            pipe.get(impression_key(prefix, b))
        records = await pipe.execute()
    served = {b: json.loads(r) for b, r in zip(batches, records, strict=True) if r is not None}
    known: list[tuple[str, str, int, bool]] = []
    for item in wanted:
        rec = served.get(item[1])
        if rec is None or item[2] >= len(rec["p"]):
            out.unknown.append(item[0])
        else:
            known.append(item)
    if not known:
        return out
    async with client.pipeline(transaction=False) as pipe:
        for _, batch, row, clicked in known:
            pipe.hsetnx(feedback_key(prefix, batch), str(row), f"{int(clicked)}:{at_ms}")
        for batch in dict.fromkeys(b for _, b, _, _ in known):
            pipe.expire(feedback_key(prefix, batch), ttl_s)
        results = await pipe.execute()
    for (impression_id, batch, row, clicked), new in zip(known, results, strict=False):
        if new:
            rec = served[batch]
            out.accepted.append(Joined(impression_id, rec["v"], float(rec["p"][row]), clicked))
        else:
            out.duplicates.append(impression_id)
    return out
