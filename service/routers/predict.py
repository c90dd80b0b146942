"""POST /predict: raw records -> feature ids -> pooled ONNX inference -> probabilities."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import APIRouter, Depends, HTTPException, Request, Response
from starlette.types import Receive

from service.batcher import ClientGone, Overloaded
from service.ids import random_hex
from service.impressions import new_impressions
from service.middleware import content_length
from service.schemas import ErrorResponse, PredictRequest, PredictResponse
from service.scoring import score_rows
from service.state import ServiceState, get_state
from service.tracing import current_request_id

router = APIRouter(tags=["predict"])

CLIENT_CLOSED_REQUEST = 499  # nginx's code: nobody reads it, but logs and metrics tell it apart


def _overloaded(exc: Overloaded) -> HTTPException:
    return HTTPException(status_code=503, detail=str(exc), headers=exc.headers())


@router.post(
    "/predict",
    response_model=PredictResponse,
    responses={
        413: {"model": ErrorResponse, "description": "Body larger than DLF_MAX_BODY_BYTES."},
        422: {"model": ErrorResponse, "description": "Invalid request; names the record index and field."},
        499: {"description": "The client disconnected before inference; the request was dropped."},
        503: {
            "description": "Model not loaded yet, or the inference queue is full (DLF_MAX_QUEUE_MS, "
            "DLF_MAX_QUEUED_ROWS): "
            "retry after the Retry-After header's seconds.",
            "headers": {"Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}}},
        },
    },
)
async def predict(
    body: PredictRequest, request: Request, state: ServiceState = Depends(get_state)
) -> Response:
    """Click probabilities for each row, in request order. Unknown categorical values are OOV, not errors."""
    return await answer(
        state, body.rows(), body.row_label, request.receive, content_length(request.scope)
    )


async def answer(
    state: ServiceState,
    rows: list[dict[str, Any]],
    row_label: str,
    receive: Receive,
    body_bytes: int | None,
) -> Response:
    """Score ``rows`` and build the route's answer (service/fast_predict.py sends ``answer_json``'s itself).

    Raises HTTPException (503 overloaded / loading, 499 client gone) and EncodingError (422).
    """
    content, request_id = await answer_json(state, rows, row_label, receive, body_bytes)
    return Response(content, media_type="application/json", headers={"X-Request-ID": request_id})


async def answer_json(
    state: ServiceState,
    rows: list[dict[str, Any]],
    row_label: str,
    receive: Receive,
    body_bytes: int | None,
) -> tuple[bytes, str]:
    """The answer's JSON and its request id; raises as ``answer`` does."""
    try:
        scored = await score_rows(state, rows, row_label=row_label, watch=receive, body_bytes=body_bytes)
    except Overloaded as exc:
        raise _overloaded(exc) from None
    except ClientGone as exc:
        raise HTTPException(status_code=CLIENT_CLOSED_REQUEST, detail=str(exc)) from None

    request_id = current_request_id() or random_hex(16)  # the caller's X-Request-ID when it sent one
    probabilities = scored.probabilities.tolist()  # Python floats, exactly float(p) of each float32
    if state.request_log is not None:
        state.request_log.log(
            {
                "request_id": request_id,
                "time": datetime.now(UTC).isoformat(),
                "model_version": scored.model_version,
                "degraded": scored.degraded,
                "records": rows,
                "probabilities": probabilities,
            }
        )
    batch, impression_ids = new_impressions(len(rows))
    if state.impressions is not None:  # queued only: never waits on Redis, never fails the response
        state.impressions.log(batch, scored.model_version, rows, probabilities)
    if state.shadow is not None:  # detached task: never delays or fails this response
        state.shadow.submit(scored.store, rows, probabilities)
    # orjson straight to bytes: skips re-validating our own response model (docs/benchmarks.md).
    content = orjson.dumps(
        {
            "request_id": request_id,
            "model_version": scored.model_version,
            "probabilities": probabilities,
            "impression_ids": impression_ids,
            "oov_fields": scored.oov_fields,
            "degraded": scored.degraded,
        }
    )
    return content, request_id
