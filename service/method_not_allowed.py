"""405 answers that list every method of the path in ``Allow``.

Starlette answers 405 from the first route whose path matches, so a path served
by two routes (``POST`` and ``DELETE /admin/shadow``) would advertise only one
method. This handler recomputes ``Allow`` from all the app's routes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.routing import Match


def _leaf_routes(routes: Iterable[Any]) -> Iterator[Any]:
    """Routes with paths, looking into included routers (FastAPI keeps those nested)."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from _leaf_routes(inner.routes)
        else:
            yield route


def install_method_not_allowed(app: FastAPI) -> None:
    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 405:
            methods: set[str] = set()
            for route in _leaf_routes(app.router.routes):
                match, _ = route.matches({**request.scope, "method": "\\0"})
                if match is not Match.NONE:
                    methods |= set(getattr(route, "methods", None) or ())
            if methods:
                exc.headers = {**(exc.headers or {}), "Allow": ", ".join(sorted(methods))}
        return await http_exception_handler(request, exc)
