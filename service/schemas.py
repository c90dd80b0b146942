"""Request and response bodies of the HTTP API (pydantic), with the examples shown in /docs."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

Record = dict[str, Any]

RECORDS_EXAMPLE: dict[str, Any] = {
    "records": [
        {"user": "u1", "item": 266, "daytime": "morning", "city": "paris", "price": 3.5, "rating": 4},
        {
            "user": "u2",
            "item": "never-seen",
            "daytime": "night",
            "city": "oslo",
            "price": None,
            "rating": 1.5,
        },
    ]
}
RANKING_EXAMPLE: dict[str, Any] = {
    "context": {"user": "u1", "daytime": "evening", "city": "paris"},
    "candidates": [
        {"item": 266, "price": 0.0, "rating": 5},
        {"item": "abc", "price": 12.0, "rating": 3},
    ],
}


class PredictRequest(BaseModel):
    """Either ``records`` or ``context`` + ``candidates`` (context is merged into each candidate)."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [RECORDS_EXAMPLE, RANKING_EXAMPLE]}
    )

    records: list[Record] | None = Field(None, description="One object per row: field -> raw value.")
    context: Record | None = Field(None, description="Fields shared by every candidate (ranking shape).")
    candidates: list[Record] | None = Field(
        None, description="Rows to score in the ranking shape; a candidate's own value wins over context."
    )

    @model_validator(mode="after")
    def _one_shape(self) -> PredictRequest:
        if self.records is not None and (self.context is not None or self.candidates is not None):
            raise ValueError("send either 'records' or 'context' + 'candidates', not both")
        if self.records is None and self.candidates is None:
            raise ValueError("send 'records' (a list of objects) or 'candidates' (with optional 'context')")
        return self

    @property
    def row_label(self) -> str:
        return "record" if self.records is not None else "candidate"

    def rows(self) -> list[Record]:
        """The rows to score, in request order."""
        if self.records is not None:
            return self.records
        context = self.context or {}
        return [{**context, **candidate} for candidate in self.candidates or []]


class PredictResponse(BaseModel):
    model_config = ConfigDict(
        protected_namespaces=(),
        json_schema_extra={
            "examples": [
                {
                    "request_id": "3f1c0e5a9b2d4c6e8f0a1b2c3d4e5f60",
                    "model_version": "20250101T000000Z-aaaaaaaa",
                    "probabilities": [0.4213, 0.0871],
                    "impression_ids": [
                        "9b2d4c6e8f0a1b2c3d4e5f603f1c0e5a-0",
                        "9b2d4c6e8f0a1b2c3d4e5f603f1c0e5a-1",
                    ],
                    "oov_fields": {"item": 1},
                    "degraded": False,
                }
            ]
        },
    )

    request_id: str = Field(description="Also in the request log and the X-Request-ID header.")
    model_version: str
    probabilities: list[float] = Field(description="Click probability per row, in request order.")
    impression_ids: list[str] = Field(
        default_factory=list,
        description="One id per row, in request order; send it back to POST /feedback with the click.",
    )
    oov_fields: dict[str, int] = Field(
        description="Per categorical field, how many rows had a value outside the vocabulary (zeros omitted)."
    )
    degraded: bool = Field(
        description="True when the feature store could not be reached and uncached values were treated as OOV."
    )


class ErrorItem(BaseModel):
    record: int | None = Field(None, description="Index of the offending record/candidate.")
    field: str | None = Field(None, description="Name of the offending field.")
    message: str


class ErrorResponse(BaseModel):
    detail: str = Field(description="All problems in one human-readable line.")
    errors: list[ErrorItem] = Field(default_factory=list)


class FieldInfo(BaseModel):
    name: str
    kind: str
    index: int
    vocab_size: int | None = None
    transform: str | None = None


class BatchingInfo(BaseModel):
    enabled: bool
    max_batch_rows: int
    max_wait_ms: float


class InfoResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model_version: str
    model_name: str
    fields: list[FieldInfo]
    providers: list[str] = Field(
        description="ONNX Runtime execution providers in use (session.get_providers())."
    )
    available_providers: list[str]
    batching: BatchingInfo
    feature_store: str
    max_request_rows: int
    max_body_bytes: int


class ReadyResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    ready: bool
    model_version: str | None = None
    warmed_up: bool = False
    feature_store: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None
