"""Open Inference Protocol v2 endpoints (KServe / Triton clients), next to /predict.

Errors are ``{"error": "..."}`` as the protocol says (tritonclient raises them
as InferenceServerException): 400 bad tensors, 404 unknown model, 503 not ready.
Scoring goes through service.scoring, the same path as /predict, so the
probabilities are identical for the same rows.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from service.batcher import ClientGone, Overloaded
from service.encoding import EncodingError
from service.model_holder import LoadedModel
from service.oip import HEADER_LENGTH, OIPError, infer_response, model_metadata, parse_infer
from service.routers.predict import CLIENT_CLOSED_REQUEST
from service.scoring import score_rows
from service.state import ServiceState, get_state
from service.tracing import current_request_id

router = APIRouter(prefix="/v2", tags=["open inference protocol v2"])


class OIPErrorBody(BaseModel):
    error: str


class LiveBody(BaseModel):
    live: bool


class ReadyBody(BaseModel):
    ready: bool


class ModelReadyBody(BaseModel):
    name: str
    ready: bool


class TensorMetadata(BaseModel):
    name: str
    datatype: str = Field(description="BYTES (categorical field) or FP32 (numeric field / output).")
    shape: list[int]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class InferOutputBody(BaseModel):
    name: str
    datatype: str
    shape: list[int]
    data: list[float] | None = None
    parameters: dict[str, Any] | None = None


class InferResponseBody(BaseModel):
    model_config = {"protected_namespaces": ()}
    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[InferOutputBody]
    parameters: dict[str, Any] = Field(
        default_factory=dict, description="request_id, oov_fields and degraded, as in /predict."
    )


NOT_FOUND = {404: {"model": OIPErrorBody, "description": "No model of that name is served."}}
NOT_READY = {
    503: {
        "model": OIPErrorBody,
        "description": "The model is still loading, or the inference queue is full (see Retry-After).",
    }
}


def _error(message: str, status_code: int) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status_code)


def _served(state: ServiceState, name: str) -> LoadedModel | JSONResponse:
    """The served model when ``name`` is its name, else the error response to send."""
    if not state.holder.ready:
        return _error(state.load_error or "model is still loading", 503)
    model = state.holder.current
    if name != model.schema.model_name:
        return _error(f"unknown model {name!r}; this server serves {model.schema.model_name!r}", 404)
    return model


@router.get("", response_model=ServerMetadata)
async def server_metadata() -> ServerMetadata:
    """Server name, version and protocol extensions (binary tensor data)."""
    return ServerMetadata(name="dlf-ctr", version="1.0", extensions=["binary_tensor_data"])


@router.get("/health/live", response_model=LiveBody)
async def live() -> LiveBody:
    """The process is alive."""
    return LiveBody(live=True)


@router.get("/health/ready", response_model=ReadyBody, responses={503: {"model": ReadyBody}})
async def ready(state: ServiceState = Depends(get_state)) -> JSONResponse:
    """200 once the model is loaded (same condition as /readyz), 503 before."""
    ok = state.holder.ready and state.store is not None
    if ok:
        status = await state.store.status(state.holder.current.version)  # type: ignore[union-attr]
        ok = status.ready
    return JSONResponse({"ready": ok}, status_code=200 if ok else 503)


@router.get("/models/{name}", response_model=ModelMetadata, responses={**NOT_FOUND, **NOT_READY})
async def metadata(name: str, state: ServiceState = Depends(get_state)) -> Any:
    """One BYTES input per categorical field, one FP32 input per numeric field, one FP32 output."""
    model = _served(state, name)
    return model if isinstance(model, JSONResponse) else model_metadata(model.schema)


@router.get("/models/{name}/ready", response_model=ModelReadyBody, responses={**NOT_FOUND, **NOT_READY})
async def model_ready(name: str, state: ServiceState = Depends(get_state)) -> Any:
    """200 with ready true when ``name`` is served and loaded."""
    model = _served(state, name)
    return model if isinstance(model, JSONResponse) else ModelReadyBody(name=name, ready=True)


@router.post(
    "/models/{name}/infer",
    response_model=InferResponseBody,
    responses={
        400: {"model": OIPErrorBody, "description": "Inputs do not match the model's metadata."},
        413: {"description": "Body larger than DLF_MAX_BODY_BYTES."},
        **NOT_FOUND,
        **NOT_READY,
    },
)  # request body documented by service.typed_openapi (InferRequest)
async def infer(name: str, request: Request, state: ServiceState = Depends(get_state)) -> Response:
    """Click probabilities as the FP32 output ``probability`` [rows], JSON or binary tensor data."""
    model = _served(state, name)
    if isinstance(model, JSONResponse):
        return model
    try:
        parsed = parse_infer(
            await request.body(),
            request.headers.get(HEADER_LENGTH),
            model.schema,
            state.settings.max_request_rows,
        )
        scored = await score_rows(state, parsed.rows, watch=request.receive)
    except OIPError as exc:
        return _error(str(exc), exc.status_code)
    except Overloaded as exc:
        return JSONResponse({"error": str(exc)}, status_code=503, headers=exc.headers())
    except ClientGone as exc:
        return _error(str(exc), CLIENT_CLOSED_REQUEST)
    except EncodingError as exc:
        return _error(str(exc), 400)
    extra = {
        "request_id": current_request_id(),
        "oov_fields": scored.oov_fields,
        "degraded": scored.degraded,
    }
    body, headers = infer_response(
        parsed, scored.model_name, scored.model_version, scored.probabilities, extra
    )
    media_type = headers.pop("content-type")
    return Response(body, media_type=media_type, headers=headers)
