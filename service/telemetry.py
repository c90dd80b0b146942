"""OpenTelemetry tracing behind ``DLF_OTEL_ENABLED`` (opentelemetry-instrumentation-fastapi).

The instrumentation continues an incoming W3C ``traceparent`` (server span =
child of the caller's span); the request-context middleware then reports that
span's ids in the access log and the response's ``traceparent``. Spans go to
OTLP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set and the OTLP exporter package
is installed, else nowhere unless a test/embedding app installed its own
TracerProvider first. The packages are the ``otel`` extra: off by default, so
the base image does not need them.
"""

from __future__ import annotations

import logging
import os

from fastapi import FastAPI

log = logging.getLogger(__name__)


def _ensure_provider() -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    if isinstance(trace.get_tracer_provider(), TracerProvider):
        return  # already configured by the host process (or a test)
    provider = TracerProvider(
        resource=Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "dlf-ctr")})
    )
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.trace.export import BatchSpanProcessor

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        except ImportError:
            log.warning("OTEL_EXPORTER_OTLP_ENDPOINT is set but opentelemetry-exporter-otlp is not installed")
    trace.set_tracer_provider(provider)


def instrument(app: FastAPI) -> None:
    """Trace every request of ``app``; a clear error when the ``otel`` extra is missing."""
    try:
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
    except ImportError as exc:
        raise RuntimeError("DLF_OTEL_ENABLED=true needs the otel extra: pip install 'dlf-ctr[otel]'") from exc
    _ensure_provider()
    FastAPIInstrumentor.instrument_app(app, excluded_urls="metrics,healthz")
