"""The 422 body of an encoding error, shared by the FastAPI handler and the /predict fast path."""

from __future__ import annotations

from fastapi.responses import JSONResponse

from service.encoding import EncodingError


def encoding_error_response(exc: EncodingError) -> JSONResponse:
    """``{detail, errors: [{record, field, message}]}`` with status 422."""
    errors = [{"record": e.record, "field": e.field, "message": e.message} for e in exc.errors]
    return JSONResponse({"detail": str(exc), "errors": errors}, status_code=422)
