"""Traceable requests: X-Request-ID in and out, W3C ``traceparent`` propagation, one JSON log line each.

``RequestContextMiddleware`` (pure ASGI, like the others) takes the caller's
``X-Request-ID`` when it is sane (else mints one), echoes it on every response,
continues the caller's trace (``traceparent``: same trace id, a new span id for
this service, returned in the response) and, when the request ends, writes one
access log line with ``request_id``, ``trace_id``, ``status``, ``latency_ms``
and what the handler added via ``annotate`` (``model_version``, ``rows``...).
Handlers read the id with ``current_request_id()``.

When OpenTelemetry is on (``DLF_OTEL_ENABLED``), ``opentelemetry-instrumentation-fastapi``
owns the spans; this module then reports the active span's ids instead of its own.
"""

from __future__ import annotations

import contextvars
import logging
import re
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.ids import random_hex
from service.metrics import ServiceMetrics

REQUEST_ID_HEADER = "x-request-id"
REQUEST_ID_HEADER_BYTES = REQUEST_ID_HEADER.encode()
# Printable, header-safe, bounded: anything else is replaced (never echo attacker-controlled junk).
REQUEST_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:/+=@-]{1,128}$")
TRACEPARENT_PATTERN = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")

access_log = logging.getLogger("service.access")


@dataclass
class RequestContext:
    """What one request carries through the service; handlers add fields for the access log."""

    request_id: str
    trace_id: str | None = None
    parent_span_id: str | None = None
    span_id: str = field(default_factory=lambda: random_hex(8))
    sampled: str = "01"
    fields: dict[str, Any] = field(default_factory=dict)

    @property
    def traceparent(self) -> str | None:
        return f"00-{self.trace_id}-{self.span_id}-{self.sampled}" if self.trace_id else None


_current: contextvars.ContextVar[RequestContext | None] = contextvars.ContextVar("dlf_request", default=None)


def current_request_id() -> str | None:
    """The X-Request-ID of the request being handled (None outside a request)."""
    ctx = _current.get()
    return ctx.request_id if ctx is not None else None


def annotate(**fields: Any) -> None:
    """Add fields (model_version, rows, degraded...) to this request's access log line."""
    ctx = _current.get()
    if ctx is not None:
        ctx.fields.update(fields)


def parse_traceparent(value: str | None) -> tuple[str, str, str] | None:
    """(trace_id, parent span id, flags) of a valid W3C traceparent, else None (all-zero ids are invalid)."""
    if not value:
        return None
    m = TRACEPARENT_PATTERN.match(value.strip().lower())
    if m is None or set(m.group(1)) == {"0"} or set(m.group(2)) == {"0"}:
        return None
    return m.group(1), m.group(2), m.group(3)


def _otel_ids() -> tuple[str, str] | None:
    """(trace_id, span_id) of the active OpenTelemetry span, when OpenTelemetry is installed and on."""
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return None
    span_ctx = trace.get_current_span().get_span_context()
    if not span_ctx.is_valid:
        return None
    return f"{span_ctx.trace_id:032x}", f"{span_ctx.span_id:016x}"


class RequestContextMiddleware:
    """Request id + trace context + in-flight gauge + access log for every HTTP request."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics | None = None, otel: bool = False) -> None:
        self.app = app
        self.metrics = metrics
        self.otel = otel  # DLF_OTEL_ENABLED: report the instrumentation's span instead of our own ids

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming, traceparent = "", None
        for key, value in scope.get("headers") or []:  # only the two headers this layer reads
            name = key.lower()
            if name == REQUEST_ID_HEADER_BYTES:
                incoming = value.decode("latin-1").strip()
            elif name == b"traceparent":
                traceparent = value.decode("latin-1")
        ctx = RequestContext(request_id=incoming if REQUEST_ID_PATTERN.match(incoming) else random_hex(16))
        parent = parse_traceparent(traceparent)
        if parent is not None:
            ctx.trace_id, ctx.parent_span_id, ctx.sampled = parent
        status = 500
        start = time.perf_counter()

        async def send_with_ids(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                otel = _otel_ids() if self.otel else None
                if otel is not None:  # OpenTelemetry made the server span: report its ids
                    ctx.trace_id, ctx.span_id = otel
                out = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                out.append((b"x-request-id", ctx.request_id.encode("latin-1")))
                if ctx.traceparent is not None and not any(k.lower() == b"traceparent" for k, _ in out):
                    out.append((b"traceparent", ctx.traceparent.encode("latin-1")))
                message = {**message, "headers": out}
            await send(message)

        if self.metrics is not None:
            self.metrics.in_flight.inc()
        token = _current.set(ctx)  # set/reset, not a generator context manager: this runs on every request
        try:
            await self.app(scope, receive, send_with_ids)
        finally:
            _current.reset(token)
            if self.metrics is not None:
                self.metrics.in_flight.dec()
            if access_log.isEnabledFor(logging.INFO):  # the extra dict costs even when the line is dropped
                access_log.info(
                    "%s %s %s",
                    scope.get("method", ""),
                    scope.get("path", ""),
                    status,
                    extra={
                        "request_id": ctx.request_id,
                        "trace_id": ctx.trace_id,
                        "span_id": ctx.span_id,
                        "method": scope.get("method", ""),
                        "path": scope.get("path", ""),
                        "status": status,
                        "latency_ms": round((time.perf_counter() - start) * 1000, 3),
                        **ctx.fields,
                    },
                )
