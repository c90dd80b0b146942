"""Operational endpoints: /healthz (alive), /readyz (can serve), /info, /metrics."""

from __future__ import annotations

import os
from typing import Any

import onnxruntime as ort
from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from pydantic import Field

from service.metrics import multiprocess_mode
from service.processes import group_dir
from service.provider_guard import check_provider
from service.schemas import BatchingInfo, FieldInfo, InfoResponse, ReadyResponse
from service.state import ServiceState, get_state

router = APIRouter(tags=["operations"])


class ServiceInfoResponse(InfoResponse):
    """/info with the model lifecycle: previous version, last reload, shadow comparison."""

    lifecycle: dict[str, Any] = Field(default_factory=dict, description="reload history and triggers")
    shadow: dict[str, Any] | None = Field(
        None,
        description="shadow model: rows compared, mean |diff|, mean live vs shadow p, decision agreement",
    )
    process: dict[str, int] = Field(
        default_factory=dict,
        description="pid of the process that answered and processes sharing the port (serve --processes)",
    )


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive (says nothing about the model)."""
    return {"status": "ok"}


@router.get("/readyz", response_model=ReadyResponse, responses={503: {"model": ReadyResponse}})
async def readyz(state: ServiceState = Depends(get_state)) -> JSONResponse:
    """200 once the model is loaded and warmed up and the feature store has its vocab; 503 otherwise."""
    if state.draining:
        return JSONResponse(ReadyResponse(ready=False, error="shutting down").model_dump(), status_code=503)
    if not state.holder.ready or state.store is None:
        body = ReadyResponse(ready=False, error=state.load_error or "model is still loading")
        return JSONResponse(body.model_dump(), status_code=503)
    model = state.holder.current
    store_status = await state.store.status(model.version)
    provider_error = check_provider(
        state.settings.require_provider, model.provider, ort.get_available_providers()
    )
    ready = store_status.ready and provider_error is None
    body = ReadyResponse(
        ready=ready,
        model_version=model.version,
        warmed_up=True,  # load_model warms up before the holder gets the model
        feature_store={"backend": store_status.backend, "ready": store_status.ready, **store_status.details},
        error=None
        if ready
        else provider_error or store_status.details.get("error", "feature store not ready"),
    )
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


@router.get("/info", response_model=ServiceInfoResponse)
async def info(state: ServiceState = Depends(get_state)) -> ServiceInfoResponse:
    """Model version, input fields, execution providers in use and batching settings."""
    model, store, batcher = state.serving()
    s = state.settings
    return ServiceInfoResponse(
        model_version=model.version,
        model_name=model.schema.model_name,
        fields=[
            FieldInfo(
                name=f.name,
                kind=f.kind,
                index=f.index,
                vocab_size=f.vocab_size if f.kind == "categorical" else None,
                transform=f.transform if f.kind == "numeric" else None,
            )
            for f in model.schema.fields
        ],
        providers=model.providers,
        available_providers=list(ort.get_available_providers()),
        batching=BatchingInfo(
            enabled=s.batching_enabled, max_batch_rows=batcher.max_batch_rows, max_wait_ms=s.max_wait_ms
        ),
        feature_store=store.backend,
        max_request_rows=s.max_request_rows,
        max_body_bytes=s.max_body_bytes,
        lifecycle=state.reloader.info() if state.reloader is not None else {},
        shadow=state.shadow.summary() if state.shadow is not None else None,
        process={"pid": os.getpid(), "processes": s.resolved_processes if group_dir() else 1},
    )


@router.get("/metrics", include_in_schema=False)
async def metrics(state: ServiceState = Depends(get_state)) -> Response:
    if multiprocess_mode():  # serve --processes N: every process's values, added up
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
