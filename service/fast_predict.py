"""POST /predict's everyday shape without FastAPI's routing, dependency and validation passes.

A 1-row /predict spent about half its Python time between the last middleware and the
endpoint (routing, dependency solving, pydantic over the body; py-spy, docs/benchmarks.md),
which is what kept a single connection slower than a 30-line server. This innermost pure-ASGI
layer answers bodies that are exactly ``{"records": [object, ...]}`` (non-empty, JSON content
type, parsed by orjson) through the same ``answer`` as the route. Everything else (the ranking
shape, invalid JSON, wrong types, extra keys) is replayed to the FastAPI route unchanged, so
errors and the OpenAPI contract stay the route's. Every outer middleware (request id, metrics,
draining, admission, body limit) still runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from fastapi import HTTPException
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from service.encoding import EncodingError
from service.errors import encoding_error_response
from service.middleware import replay_body
from service.routers.predict import answer_json
from service.state import ServiceState

JSON_TYPES = (b"application/json",)


def _is_json(scope: Scope) -> bool:
    for key, value in scope.get("headers") or []:
        if key.lower() == b"content-type":
            return value.split(b";", 1)[0].strip().lower() in JSON_TYPES
    return False


def plain_records(body: bytes) -> list[dict[str, Any]] | None:
    """The records of a body that is exactly ``{"records": [object, ...]}``, else None (-> the route)."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:  # also what orjson refuses and json accepts (NaN, huge ints)
        return None
    if type(doc) is not dict or len(doc) != 1:
        return None
    records = doc.get("records")
    if type(records) is not list or not records or any(type(r) is not dict for r in records):
        return None
    return records


class PredictFastPath:
    """Answer plain-records /predict bodies directly; replay anything else to the app."""

    def __init__(self, app: ASGIApp, state: Callable[[], ServiceState], path: str = "/predict") -> None:
        self.app = app
        self.state = state
        self.path = path
        self.served = 0  # answered here (tests and profiling read it)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not (
            scope["type"] == "http"
            and scope.get("path") == self.path
            and scope.get("method") == "POST"
            and _is_json(scope)
        ):
            await self.app(scope, receive, send)
            return
        chunks = []
        while True:  # the body limit middleware above has already bounded it
            message = await receive()
            if message["type"] != "http.request":  # client gone before the body arrived
                await self.app(scope, replay_body(b"".join(chunks), receive, message), send)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        records = plain_records(body)
        if records is None:
            await self.app(scope, replay_body(body, receive), send)
            return
        self.served += 1
        try:
            content, request_id = await answer_json(self.state(), records, "record", receive, len(body))
        except HTTPException as exc:  # what FastAPI's default handler sends
            response = JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)
        except EncodingError as exc:
            response = encoding_error_response(exc)
        else:  # the two messages Response(content, media_type=JSON) sends, without building one (~3 %)
            head = [
                (b"content-length", str(len(content)).encode()),
                (b"content-type", b"application/json"),
                (b"x-request-id", request_id.encode("latin-1")),
            ]
            await send({"type": "http.response.start", "status": 200, "headers": head})
            await send({"type": "http.response.body", "body": content})
            return
        await response(scope, receive, send)

