"""Request context and OpenTelemetry: ids in and out, the caller's trace continued by the server span."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from service.testing import TinyBundle
from service.tracing import parse_traceparent

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT = "b7ad6b7169203331"


@pytest.fixture(scope="module")
def exporter() -> InMemorySpanExporter:
    """One global TracerProvider for the test process (OpenTelemetry allows setting it once)."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    return memory


def test_parse_traceparent() -> None:
    assert parse_traceparent(f"00-{TRACE_ID}-{PARENT}-01") == (TRACE_ID, PARENT, "01")
    for bad in (None, "", "00-xyz-abc-01", f"00-{'0' * 32}-{PARENT}-01", f"00-{TRACE_ID}-{'0' * 16}-01"):
        assert parse_traceparent(bad) is None


async def test_otel_server_span_continues_the_callers_trace(
    make_client, bundle_a: TinyBundle, exporter: InMemorySpanExporter
) -> None:
    client = await make_client(otel_enabled=True)
    exporter.clear()
    r = await client.post(
        "/predict",
        json={
            "records": [
                {"user": "u1", "item": 266, "daytime": "night", "city": "oslo", "price": 1, "rating": 2}
            ]
        },
        headers={"traceparent": f"00-{TRACE_ID}-{PARENT}-01", "X-Request-ID": "otel-1"},
    )
    assert r.status_code == 200 and r.headers["x-request-id"] == "otel-1"
    spans = [s for s in exporter.get_finished_spans() if s.context.trace_id == int(TRACE_ID, 16)]
    server = [s for s in spans if s.parent is not None and s.parent.span_id == int(PARENT, 16)]
    assert server, [s.name for s in exporter.get_finished_spans()]
    _, trace_id, span_id, _ = r.headers["traceparent"].split("-")
    assert trace_id == TRACE_ID and int(span_id, 16) == server[0].context.span_id


async def test_without_otel_the_trace_id_still_propagates(make_client, bundle_a: TinyBundle) -> None:
    client = await make_client()
    r = await client.get("/healthz", headers={"traceparent": f"00-{TRACE_ID}-{PARENT}-01"})
    _, trace_id, span_id, flags = r.headers["traceparent"].split("-")
    assert (trace_id, flags) == (TRACE_ID, "01") and span_id != PARENT
    assert "traceparent" not in (await client.get("/healthz")).headers  # no trace started by us
