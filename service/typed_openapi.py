"""/openapi.json typed for the bundle being served, rebuilt when a hot reload changes the version.

FastAPI's generated schema knows only "a list of objects" for /predict. Here the
request body is replaced by the served model's fields (name, kind, example,
what values are accepted), the v2 model name becomes an enum, every error
status the service sends is documented with the body it really has, and every
response documents the X-Request-ID header. A schema-valid request is thus an
accepted one, and a schema-invalid one is refused (checked by schemathesis in
tests/e2e/test_openapi_contract.py).
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from service.contract import BundleSchema, FieldSchema
from service.oip import InferRequest
from service.settings import Settings

ERROR_REF = {"$ref": "#/components/schemas/ErrorResponse"}
REQUEST_ID_HEADER = {
    "X-Request-ID": {
        "description": "The caller's X-Request-ID when it sent a valid one (1-128 of A-Za-z0-9._:/+=@-), else a new id.",
        "schema": {"type": "string"},
    }
}
# Statuses each path can answer besides its own; bodies are {"detail", "errors"?} (ErrorResponse).
COMMON_ERRORS = {
    "/predict": {
        400: "Body is not parseable JSON.",
        413: "Body larger than DLF_MAX_BODY_BYTES.",
        503: "Model not loaded yet.",
    },
    "/info": {503: "Model not loaded yet."},
    "/feedback": {
        400: "Body is not parseable JSON.",
        413: "Body larger than DLF_MAX_BODY_BYTES.",
        503: "No Redis configured for impressions, or Redis unreachable: nothing stored, retry.",
    },
    "/admin/": {
        400: "Body is not parseable JSON.",
        401: "Missing Authorization: Bearer token.",
        403: "Wrong admin token.",
        404: "Admin API disabled (DLF_ADMIN_TOKEN unset), unknown bundle version or no shadow running.",
        409: "Reload refused: the bundle failed validation; the old model keeps serving.",
        413: "Body larger than DLF_MAX_BODY_BYTES.",
        422: "Invalid body or version name.",
        503: "Service still starting.",
    },
}
# Numeric strings the service parses (float()); bounded digits so no pattern-valid string overflows.
NUMERIC_STRING = r"^(-?[0-9]{1,15}(\.[0-9]{1,6})?)?$"
NONNEGATIVE_STRING = r"^([0-9]{1,15}(\.[0-9]{1,6})?)?$"


def _example(bundle_dir: Any, f: FieldSchema) -> Any:
    """A value the vocabulary knows (first entry) when the file is small, else a plain placeholder."""
    if bundle_dir is not None and f.vocab_file:
        path = bundle_dir / f.vocab_file
        try:
            if path.stat().st_size < 1_000_000:
                values = json.loads(path.read_text())
                if values:
                    return values[0]
        except (OSError, ValueError):
            pass
    return f"{f.name}-value"


def field_schema(f: FieldSchema, example: Any) -> dict[str, Any]:
    """JSON Schema of one raw value, exactly what service.encoding accepts."""
    if f.kind == "categorical":
        return {
            "type": ["string", "number", "boolean", "null"],
            "description": f"categorical ({f.vocab_size - 1} known values; others are OOV, not errors; null = missing)",
            "examples": [example],
        }
    lower = {"exclusiveMinimum": -1} if f.transform == "log1p" else {}
    return {
        "anyOf": [
            {"type": "number", **lower},
            {"type": "string", "pattern": NONNEGATIVE_STRING if f.transform == "log1p" else NUMERIC_STRING},
            {"type": "null"},
        ],
        "description": f"numeric ({f.transform}{', > -1' if f.transform == 'log1p' else ''}; null or '' = missing)",
        "examples": [round(f.mean, 3)],
    }


def predict_body_schema(schema: BundleSchema, settings: Settings, bundle_dir: Any = None) -> dict[str, Any]:
    """Records, or context + candidates where every field is in the context or in every candidate."""
    props = {f.name: field_schema(f, _example(bundle_dir, f)) for f in schema.fields}
    names = [f.name for f in schema.fields]
    rows = {"minItems": 1, "maxItems": settings.max_request_rows}
    record = {"type": "object", "properties": props, "required": names}
    records_shape = {
        "type": "object",
        "title": "Records",
        "additionalProperties": False,
        "required": ["records"],
        "properties": {
            "records": {"type": "array", "items": record, **rows, "description": "One object per row."},
            "context": {"type": "null"},
            "candidates": {"type": "null"},
        },
    }
    # A field may come from the context instead of the candidates; "every field is in the context or
    # in every candidate" needs 2^fields branches in JSON Schema (schemathesis/hypothesis give up past
    # ~5 fields), so the documented ranking shape asks every candidate for every field: a subset of
    # what the service accepts, never a superset (schema-valid bodies are always accepted).
    ranking_shape = {
        "type": "object",
        "title": "Ranking",
        "additionalProperties": False,
        "required": ["candidates"],
        "properties": {
            "records": {"type": "null"},
            # With every field in every candidate, no context value is ever read: any object is fine.
            "context": {
                "type": ["object", "null"],
                "description": "Fields shared by all candidates; a candidate's own value wins.",
            },
            "candidates": {"type": "array", "items": record, **rows},
        },
    }
    first = {n: props[n]["examples"][0] for n in names}
    return {
        "oneOf": [records_shape, ranking_shape],
        "description": f"Rows for model {schema.model_name} {schema.version}: fields {names}.",
        "examples": [{"records": [first]}],
    }


def _document_errors(spec: dict[str, Any]) -> None:
    for path, ops in spec.get("paths", {}).items():
        for method, op in ops.items():
            responses = op.setdefault("responses", {})
            if path.startswith("/v2"):
                responses.pop("422", None)  # v2 errors are {"error"} with 400; FastAPI never validates there
            elif "422" in responses:
                responses["422"] = {
                    "description": responses["422"].get("description", "Invalid request."),
                    "content": {"application/json": {"schema": ERROR_REF}},
                }
            extra = next(
                (
                    v
                    for k, v in COMMON_ERRORS.items()
                    if path == k or (k.endswith("/") and path.startswith(k))
                ),
                {},
            )
            for status, text in extra.items():
                if status in (400, 413) and method not in ("post", "put", "patch"):
                    continue
                entry = responses.setdefault(str(status), {"description": text})
                entry.setdefault("content", {"application/json": {"schema": ERROR_REF}})
                if status == 401:
                    entry["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}}}
            for entry in responses.values():
                entry.setdefault("headers", {}).update(REQUEST_ID_HEADER)
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)


def _infer_body(spec: dict[str, Any]) -> None:
    """The v2 infer body (read raw by the route, for the binary extension) as the InferRequest model."""
    op = spec.get("paths", {}).get("/v2/models/{name}/infer", {}).get("post")
    if op is None:
        return
    body = InferRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    spec.setdefault("components", {}).setdefault("schemas", {}).update(body.pop("$defs", {}))
    op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}


def build_openapi(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document for the model served right now (generic while none is loaded)."""
    spec = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    _document_errors(spec)
    _infer_body(spec)
    state = app.state.dlf
    if not state.holder.ready:
        return spec
    model = state.holder.current
    spec["info"]["description"] = (
        f"{app.description}\n\nTyped for model {model.schema.model_name} {model.version}."
    )
    body = spec["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
    body["schema"] = predict_body_schema(model.schema, state.settings, getattr(model, "bundle_dir", None))
    for path, ops in spec["paths"].items():
        if path.startswith("/v2/models/{name}"):
            for op in ops.values():
                for param in op.get("parameters", []):
                    if param["name"] == "name":
                        param["schema"] = {"type": "string", "enum": [model.schema.model_name]}
    return spec


def install_openapi(app: FastAPI) -> None:
    """Serve ``build_openapi`` from /openapi.json, cached per served version (a reload rebuilds it)."""
    cache: dict[str, Any] = {}

    def openapi() -> dict[str, Any]:
        state = app.state.dlf
        version = state.holder.current.version if state.holder.ready else None
        if cache.get("version", "-") != version:
            cache["spec"], cache["version"] = build_openapi(app), version
        return cache["spec"]

    app.openapi = openapi  # type: ignore[method-assign]
