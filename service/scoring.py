"""One scoring path for both protocols (/predict and Open Inference Protocol v2), plus its metrics.

Rows (field -> raw value) -> parse -> feature ids (store) -> micro-batched ONNX
-> probabilities. Keeping it in one place is what makes the v2 endpoint return
exactly /predict's probabilities for the same rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from starlette.types import Receive

from service.encoding import assign_ids, parse_records
from service.feature_store import FeatureStore
from service.state import ServiceState
from service.tracing import annotate


@dataclass
class Scored:
    model_version: str
    model_name: str
    probabilities: np.ndarray  # float32 [rows]
    oov_fields: dict[str, int]
    degraded: bool
    store: FeatureStore  # the store the ids came from (shadow scoring compares against the same one)


def record_served(
    state: ServiceState, version: str, rows: int, oov: Mapping[str, int], degraded: bool, probs: np.ndarray
) -> None:
    """Metrics and access-log fields of one answered request (both protocols)."""
    m = state.metrics
    m.request_rows.observe(rows)
    if degraded:
        m.degraded_responses.inc()
    for name, count in oov.items():
        m.oov_values.labels(field=name).inc(count)
    m.served_probability.observe(version, probs)
    annotate(model_version=version, rows=rows, degraded=degraded)


async def score_rows(
    state: ServiceState,
    rows: Sequence[Mapping[str, Any]],
    row_label: str = "record",
    watch: Receive | None = None,
    body_bytes: int | None = None,
) -> Scored:
    """Probabilities for ``rows`` in order, with /predict's admission control.

    Raises EncodingError (-> 4xx) for invalid values, Overloaded when the queue is
    full (-> 503 + Retry-After) and ClientGone when ``watch`` reports a disconnect.
    """
    model, store, batcher = state.serving()  # one model reference for the whole request, counted in flight
    state.holder.acquire(model)
    try:
        # shed before spending time on encoding and lookups; the rows count as queued meanwhile
        reservation = batcher.reserve(len(rows))
        try:
            if body_bytes is not None:  # lets the next refusals happen before their bodies are read
                batcher.observe_body(body_bytes, len(rows))
            parsed = parse_records(
                rows, model.schema, max_rows=state.settings.max_request_rows, row_label=row_label
            )
            lookup = await store.lookup(model.version, parsed.unique_keys())
            cat_ids, oov = assign_ids(parsed, lookup.ids)
            probs = await batcher.submit(model, cat_ids, parsed.numerics, watch=watch, reservation=reservation)
        finally:
            reservation.release()
    finally:
        state.holder.release(model)
    probs = np.asarray(probs, dtype=np.float32).reshape(-1)
    record_served(state, model.version, parsed.n_rows, oov, lookup.degraded, probs)
    return Scored(model.version, model.schema.model_name, probs, oov, lookup.degraded, store)
