"""FastAPI application factory and lifespan.

``create_app(settings)`` builds an independent app (own metrics registry,
model holder, feature store, batcher), which is what tests use. For uvicorn:
``uvicorn --factory service.app:app_factory`` or ``uvicorn service.app:app``
(``app`` is built lazily from the environment on first access).
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import onnxruntime as ort
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from service.batcher import CPU_BATCH_ROWS, MicroBatcher, Overloaded, usable_cores
from service.busy_board import board_from_environment
from service.encoding import EncodingError
from service.errors import encoding_error_response
from service.fast_predict import PredictFastPath
from service.feature_store import build_feature_store
from service.http_protocol import open_connections
from service.impressions import ImpressionLogger
from service.logs import configure_logging
from service.method_not_allowed import install_method_not_allowed
from service.metrics import ServiceMetrics
from service.middleware import AdmissionMiddleware, BodyLimitMiddleware, MetricsMiddleware
from service.model_holder import OrtOptions, load_model, resolve_version
from service.processes import group_dir
from service.provider_guard import check_provider
from service.reloader import Reloader
from service.request_log import RequestLogger
from service.routers import admin, feedback, health, predict, v2
from service.settings import Settings
from service.shutdown import DrainingMiddleware, install_sigterm_drain
from service.state import ServiceState
from service.telemetry import instrument
from service.tracing import RequestContextMiddleware
from service.typed_openapi import install_openapi

log = logging.getLogger(__name__)


def freeze_long_lived_objects() -> None:
    """Move everything alive after the first model load (the app, the libraries, the model's Python
    side) out of the cyclic collector's reach (``gc.freeze``): each automatic full collection
    otherwise walked those ~90k objects and stopped the event loop for 47-67 ms under load (a
    ``gc.callbacks`` probe on the Frappe bundle at 2x overload; 0.7-1 ms after the freeze), which
    landed in the tail latency of every request in flight. Objects created later are collected as
    usual; a frozen object that later becomes cyclic garbage is never freed, so this runs once per
    process, not per reload."""
    gc.collect()
    gc.freeze()


async def _load(state: ServiceState) -> None:
    """Load + warm up the model and prepare the feature store; readiness flips when this finishes."""
    s = state.settings
    try:
        version = resolve_version(s.registry, s.model_version)
        model = await asyncio.to_thread(
            load_model,
            s.registry / version,
            options=OrtOptions.from_settings(s),
        )
        assert state.store is not None
        await state.store.prepare(model.bundle_dir, model.schema)
        if state.holder.ready:  # a reload trigger was faster than the initial load: keep its model
            return
        state.install(model)
        if s.gc_freeze:
            freeze_long_lived_objects()
        log.info("serving %s with ONNX Runtime providers %s", model.version, model.providers)
        check_provider(s.require_provider, model.provider, ort.get_available_providers())
    except Exception as exc:  # stay alive so /readyz can say why
        state.load_error = f"model load failed: {type(exc).__name__}: {exc}"
        log.exception("model load failed")
    finally:
        state.loaded.set()


def pool_threads(s: Settings) -> tuple[int, int]:
    """Inference workers of this process (its share of the cores) and its spread threads (by
    default the cores the other processes' workers own: a lone big request may use them)."""
    workers = s.inference_workers or max(1, usable_cores() // s.resolved_processes)
    spread = max(0, usable_cores() - workers) if s.spread_threads is None else s.spread_threads
    return workers, spread


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    state: ServiceState = app.state.dlf
    s = state.settings
    state.store = build_feature_store(s, state.metrics)
    workers, spread_threads = pool_threads(s)
    state.batcher = MicroBatcher(
        enabled=s.batching_enabled,
        max_batch_rows=s.max_batch_rows or CPU_BATCH_ROWS,  # until a model says its provider (install)
        max_wait_ms=s.max_wait_ms,
        workers=workers,
        max_queued_rows=s.max_queued_rows,
        max_queue_ms=s.max_queue_ms,
        queue_factor=s.queue_factor,
        shedding_queue_factor=s.shedding_queue_factor,
        queue_floor_ms=s.queue_floor_ms,
        max_request_rows=s.max_request_rows,
        worker_niceness=s.inference_niceness,
        inline_rows=s.inline_rows,
        batches_per_worker=s.batches_per_worker,
        spread_threads=spread_threads,
        board=board_from_environment(group_dir()),
        connections=open_connections,
        metrics=state.metrics,
        serial_overload=s.serial_overload,
    )
    await state.batcher.start()
    if s.request_log_path is not None:
        state.request_log = RequestLogger(
            s.request_log_path,
            max_bytes=s.request_log_max_bytes,
            backups=s.request_log_backups,
            on_drop=state.metrics.loop.request_log_dropped.inc,
        )
    install_sigterm_drain(state, s.shutdown_grace_s)
    state.impressions = ImpressionLogger.from_settings(s, state.metrics)
    if state.impressions is not None:
        await state.impressions.start()
    load_task = asyncio.create_task(_load(state), name="dlf-model-load")
    state.reloader = Reloader(state)
    await state.reloader.start()
    try:
        yield
    finally:
        load_task.cancel()
        await asyncio.gather(load_task, return_exceptions=True)
        await state.reloader.stop()
        await state.batcher.stop()
        if state.impressions is not None:
            await state.impressions.stop()
        await state.store.close()
        if state.request_log is not None:
            state.request_log.close()


def _saturated(state: ServiceState, content_length: int | None) -> Overloaded | None:
    return state.batcher.saturated(content_length) if state.batcher is not None else None


def _no_native_telemetry() -> dict[str, Any]:
    """FastAPI >= 0.165's own OpenTelemetry hook off: tracing is ours (DLF_OTEL_ENABLED, service/telemetry.py),
    and its per-request "is a provider configured?" check cost ~3 % of a 1-row request (py-spy)."""
    if "telemetry" not in inspect.signature(FastAPI.__init__).parameters:
        return {}
    return {"telemetry": {"tracing": False, "metrics": False, "logs": False}}


def _validation_response(exc: RequestValidationError) -> JSONResponse:
    """FastAPI's shape errors in the same {detail, errors} form, with record index/field when known."""
    errors: list[dict[str, Any]] = []
    for err in exc.errors():
        loc = [p for p in err.get("loc", ()) if p != "body"]
        record = next((p for p in loc if isinstance(p, int)), None)
        field = str(loc[-1]) if loc and isinstance(loc[-1], str) else None
        where = ".".join(str(p) for p in loc) or "body"
        errors.append({"record": record, "field": field, "message": f"{where}: {err.get('msg', 'invalid')}"})
    detail = "; ".join(e["message"] for e in errors) or "invalid request body"
    return JSONResponse({"detail": detail, "errors": errors}, status_code=422)


def create_app(settings: Settings | None = None) -> FastAPI:
    """A self-contained app; the model loads in the background once it starts (see /readyz)."""
    settings = settings if settings is not None else Settings()
    metrics = ServiceMetrics()
    app = FastAPI(
        title="DLF click-probability service",
        description="Scores rows with the current DLF bundle (ONNX Runtime). See docs/api.md.",
        version="1.0",
        lifespan=lifespan,
        **_no_native_telemetry(),
    )
    state = app.state.dlf = ServiceState(settings=settings, metrics=metrics)
    app.include_router(predict.router)
    app.include_router(health.router)
    app.include_router(admin.router)
    app.include_router(feedback.router)
    app.include_router(v2.router)

    @app.exception_handler(EncodingError)
    async def _encoding_error(_: Request, exc: EncodingError) -> JSONResponse:
        return encoding_error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _validation_response(exc)

    known = {
        getattr(r, "path", "")
        for router in (predict.router, health.router, admin.router, v2.router, feedback.router)
        for r in router.routes
    }
    if not settings.otel_enabled:  # with OpenTelemetry on, every request goes through the traced route
        # the closures read ``state``, not ``app.state.dlf``: Starlette's State lookup was ~2 % of a 1-row request
        app.add_middleware(PredictFastPath, state=lambda: state)  # innermost: after every gate below
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(AdmissionMiddleware, saturated=lambda n: _saturated(state, n))  # before the body
    app.add_middleware(DrainingMiddleware, state=state)
    app.add_middleware(MetricsMiddleware, metrics=metrics, endpoints=lambda: known)  # sees 413s
    # outermost: request id, trace context and access log on every response (413/503 included)
    app.add_middleware(RequestContextMiddleware, metrics=metrics, otel=settings.otel_enabled)
    install_openapi(app)
    install_method_not_allowed(app)
    if settings.otel_enabled:
        instrument(app)
    return app


def app_factory() -> FastAPI:
    """Entry point for ``uvicorn --factory service.app:app_factory``: settings from the environment."""
    settings = Settings()
    configure_logging(settings.log_format, settings.log_level)
    return create_app(settings)


_app: FastAPI | None = None


def __getattr__(name: str) -> Any:
    """``service.app:app`` for plain ``uvicorn service.app:app``; built on first access, not at import."""
    global _app
    if name == "app":
        if _app is None:
            _app = app_factory()
        return _app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
