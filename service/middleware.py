"""Pure-ASGI middleware: request metrics and the request body size limit.

Pure ASGI (not BaseHTTPMiddleware) so they add little latency and see every
response, including the 413 the body limit sends before FastAPI runs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.metrics import ServiceMetrics

BODY_METHODS = {"POST", "PUT", "PATCH"}


class MetricsMiddleware:
    """dlf_requests_total{endpoint,status} and dlf_request_latency_seconds{endpoint}."""

    def __init__(
        self, app: ASGIApp, metrics: ServiceMetrics, endpoints: Callable[[], Collection[str]]
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.endpoints = endpoints
        # labelled children by label values: ``labels()`` validates and locks on every call (~3 % of a
        # 1-row request, py-spy); a child lives as long as its metric, so holding it is safe
        self._latency: dict[str, Any] = {}
        self._count: dict[tuple[str, int], Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        endpoint = path if path in self.endpoints() else "other"  # bounded label cardinality
        status = 500
        start = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - start
            latency = self._latency.get(endpoint)
            if latency is None:
                latency = self._latency[endpoint] = self.metrics.request_latency.labels(endpoint=endpoint)
            latency.observe(elapsed)
            count = self._count.get((endpoint, status))
            if count is None:
                labels = {"endpoint": endpoint, "status": str(status)}
                count = self._count[(endpoint, status)] = self.metrics.requests.labels(**labels)
            count.inc()


class BodyLimitMiddleware:
    """Reject bodies over ``max_bytes`` with 413, by Content-Length or while reading a chunked body."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def _reject(self, send: Send, size: str) -> None:
        detail = f"request body is {size} bytes; the limit is {self.max_bytes} (DLF_MAX_BODY_BYTES)"
        await send_error(send, 413, detail)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        declared = content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._reject(send, str(declared))
            return
        # Buffer the body (bounded) so a chunked upload cannot exceed the limit either.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._reject(send, f"more than {self.max_bytes}")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        await self.app(scope, replay_body(b"".join(chunks), receive), send)


def replay_body(body: bytes, receive: Receive, last: Message | None = None) -> Receive:
    """A ``receive`` that gives an already-read ``body`` once (then ``last``, if any), then the real one."""
    pending: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]
    if last is not None:
        pending.append(last)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay


async def send_error(send: Send, status: int, detail: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """A ``{detail, errors: []}`` JSON answer sent straight from a middleware (before any route runs)."""
    body = json.dumps({"detail": detail, "errors": []}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def content_length(scope: Scope) -> int | None:
    """The request's Content-Length header as an int (None when absent or not a number)."""
    for key, value in scope.get("headers") or []:
        if key.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class AdmissionMiddleware:
    """503 + Retry-After for ``path`` before its body is read, while the inference queue is saturated.

    The route checks admission again with the exact row count; this gate only
    spares the event loop from parsing bodies it would refuse anyway, which is
    what keeps refusals fast when the service is overloaded.
    """

    def __init__(self, app: ASGIApp, saturated: Callable[[int | None], Any], path: str = "/predict") -> None:
        self.app = app
        self.saturated = saturated
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("path") == self.path:
            refusal = self.saturated(content_length(scope))
            if refusal is not None:
                headers = [(k.lower().encode(), v.encode()) for k, v in refusal.headers().items()]
                await send_error(send, 503, str(refusal), headers)
                return
        await self.app(scope, receive, send)
