"""POST /feedback: clicks (and explicit non-clicks) for served impressions; see docs/closed-loop.md."""

from __future__ import annotations

import asyncio
import contextlib

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from service.feedback import record_feedback
from service.impressions import now_ms
from service.redis_store import REDIS_FAILURES
from service.schemas import ErrorResponse
from service.state import ServiceState, get_state

router = APIRouter(tags=["feedback"])
MAX_EVENTS = 10_000  # per request; in the schema, so a schema-valid body is an accepted one

FEEDBACK_EXAMPLE = {
    "events": [
        {"impression_id": "9b2d4c6e8f0a1b2c3d4e5f603f1c0e5a-0", "clicked": True},
        {"impression_id": "9b2d4c6e8f0a1b2c3d4e5f603f1c0e5a-1", "clicked": False},
    ]
}


class FeedbackEvent(BaseModel):
    model_config = ConfigDict(extra="forbid")

    impression_id: str = Field(min_length=1, max_length=128, description="From a /predict response.")
    clicked: StrictBool = Field(description="true: clicked; false: shown and not clicked.")


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [FEEDBACK_EXAMPLE]})

    events: list[FeedbackEvent] = Field(
        min_length=1, max_length=MAX_EVENTS, description="1 to 10,000 events."
    )


class FeedbackResponse(BaseModel):
    accepted: int = Field(description="Events stored now (first event of their impression).")
    duplicates: list[str] = Field(description="Ids that already had feedback (or repeat in this body).")
    unknown: list[str] = Field(
        description="Ids of no logged impression: malformed, never logged (sampled out, dropped while "
        "Redis was down), expired."
    )


@router.post(
    "/feedback",
    response_model=FeedbackResponse,
    responses={
        400: {"model": ErrorResponse, "description": "Body is not parseable JSON."},
        413: {"model": ErrorResponse, "description": "Body larger than DLF_MAX_BODY_BYTES."},
        422: {"model": ErrorResponse, "description": "Invalid body; names the event index and field."},
        503: {
            "model": ErrorResponse,
            "description": "No Redis configured for impressions, or Redis unreachable (retry later).",
        },
    },
)
async def feedback(body: FeedbackRequest, state: ServiceState = Depends(get_state)) -> FeedbackResponse:
    """Join click events with logged impressions. Unknown and duplicate ids are reported, not errors."""
    logger = state.impressions
    if logger is None:
        raise HTTPException(
            503, "feedback needs the impression log: set REDIS_URL or DLF_IMPRESSIONS_REDIS_URL"
        )
    if logger.pending:  # impressions this replica served a moment ago may still be queued
        with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
            await logger.flush(0.5)
    try:
        out = await record_feedback(
            logger.client,
            logger.prefix,
            [(e.impression_id, e.clicked) for e in body.events],
            at_ms=now_ms(),
            ttl_s=logger.ttl_s,
        )
    except REDIS_FAILURES as exc:
        state.metrics.redis_errors.inc()
        raise HTTPException(
            503, f"Redis unavailable, feedback not stored: {type(exc).__name__}", headers={"Retry-After": "1"}
        ) from exc
    m = state.metrics.loop
    for j in out.accepted:
        m.feedback_probability.labels(version=j.version).observe(j.probability)
        if j.clicked:
            m.feedback_clicked_probability.labels(version=j.version).observe(j.probability)
    m.feedback_events.labels(result="accepted").inc(len(out.accepted))
    m.feedback_events.labels(result="duplicate").inc(len(out.duplicates))
    m.feedback_events.labels(result="unknown").inc(len(out.unknown))
    return FeedbackResponse(accepted=len(out.accepted), duplicates=out.duplicates, unknown=out.unknown)
