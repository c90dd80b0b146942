"""POST /predict: raw records -> feature ids -> micro-batched ONNX inference -> probabilities."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from fastapi import APIRouter, Depends, Response

from service.encoding import assign_ids, parse_records
from service.impressions import new_impressions
from service.schemas import ErrorResponse, PredictRequest, PredictResponse
from service.state import ServiceState, get_state

router = APIRouter(tags=["predict"])


@router.post(
    "/predict",
    response_model=PredictResponse,
    responses={
        413: {"model": ErrorResponse, "description": "Body larger than DLF_MAX_BODY_BYTES."},
        422: {"model": ErrorResponse, "description": "Invalid request; names the record index and field."},
        503: {"description": "Model not loaded yet."},
    },
)
async def predict(
    body: PredictRequest, response: Response, state: ServiceState = Depends(get_state)
) -> PredictResponse:
    """Click probabilities for each row, in request order. Unknown categorical values are OOV, not errors."""
    with state.lease() as (model, store, batcher):  # one model reference for the whole request
        rows = body.rows()
        parsed = parse_records(
            rows, model.schema, max_rows=state.settings.max_request_rows, row_label=body.row_label
        )
        lookup = await store.lookup(model.version, parsed.unique_keys())
        cat_ids, oov = assign_ids(parsed, lookup.ids)
        probs = await batcher.submit(model, cat_ids, parsed.numerics)

    metrics = state.metrics
    metrics.request_rows.observe(parsed.n_rows)
    if lookup.degraded:
        metrics.degraded_responses.inc()
    request_id = uuid.uuid4().hex
    probabilities = [float(p) for p in probs]
    if state.request_log is not None:
        state.request_log.log(
            {
                "request_id": request_id,
                "time": datetime.now(UTC).isoformat(),
                "model_version": model.version,
                "degraded": lookup.degraded,
                "records": rows,
                "probabilities": probabilities,
            }
        )
    batch, impression_ids = new_impressions(parsed.n_rows)
    if state.impressions is not None:  # queued only: never waits on Redis, never fails the response
        state.impressions.log(batch, model.version, rows, probabilities)
    if state.shadow is not None:  # detached task: never delays or fails this response
        state.shadow.submit(store, rows, probabilities)
    response.headers["X-Request-ID"] = request_id
    return PredictResponse(
        request_id=request_id,
        model_version=model.version,
        probabilities=probabilities,
        impression_ids=impression_ids,
        oov_fields=oov,
        degraded=lookup.degraded,
    )
