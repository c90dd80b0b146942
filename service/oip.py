"""Open Inference Protocol v2 (KServe / Triton) tensors <-> the service's rows.

The v2 model has one input per schema field, shape ``[rows]`` (or ``[rows, 1]``):
``BYTES`` for a categorical field (the raw value, UTF-8) and ``FP32`` for a
numeric one (NaN = missing), and one ``FP32`` output ``probability`` ``[rows]``.
Requests come as JSON or with the binary tensor extension (a JSON header of
``Inference-Header-Content-Length`` bytes, then the raw tensors), which is what
``tritonclient`` sends by default. Everything here is pure (no I/O); problems
raise ``OIPError`` with the HTTP status to answer.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from service.contract import BundleSchema

HEADER_LENGTH = "inference-header-content-length"
OUTPUT_NAME = "probability"
NUMERIC_TYPES = {"FP32": "<f4", "FP64": "<f8", "INT32": "<i4", "INT64": "<i8"}
CATEGORICAL_TYPES = {"BYTES", "INT32", "INT64"}
Scalar = str | int | float | bool | None


class OIPError(ValueError):
    def __init__(self, message: str, status_code: int = 400) -> None:
        super().__init__(message)
        self.status_code = status_code


class TensorParameters(BaseModel):
    model_config = ConfigDict(extra="allow")
    binary_data_size: int | None = Field(
        None, ge=0, description="Bytes of this tensor after the JSON header."
    )
    binary_data: bool | None = Field(None, description="Requested output only: answer it as binary.")


class InferInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(description="A field of the served schema (see GET /v2/models/{name}).")
    shape: list[int] = Field(min_length=1, max_length=2, description="[rows] or [rows, 1].")
    datatype: str = Field(description="BYTES for categorical fields, FP32 for numeric ones.")
    parameters: TensorParameters | None = None
    data: list[Any] | None = Field(None, description="Row-major values; absent with binary data.")


class InferOutput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    parameters: TensorParameters | None = None


class InferRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[InferInput] = Field(min_length=1)
    outputs: list[InferOutput] | None = None


@dataclass
class ParsedInfer:
    request: InferRequest
    rows: list[dict[str, Scalar]]
    binary_output: bool


def model_metadata(schema: BundleSchema) -> dict[str, Any]:
    """GET /v2/models/{name}: one input per field in schema order, one FP32 output."""
    return {
        "name": schema.model_name,
        "versions": [schema.version],
        "platform": "onnxruntime_onnx",
        "inputs": [
            {"name": f.name, "datatype": "BYTES" if f.kind == "categorical" else "FP32", "shape": [-1]}
            for f in schema.fields
        ],
        "outputs": [{"name": OUTPUT_NAME, "datatype": "FP32", "shape": [-1]}],
    }


def split_body(body: bytes, header_length: str | None) -> tuple[dict[str, Any], bytes]:
    """(JSON header, binary tail) of a request, with or without the binary tensor extension."""
    if header_length is None:
        head, tail = body, b""
    else:
        if not header_length.isdigit() or int(header_length) > len(body):
            raise OIPError(f"Inference-Header-Content-Length {header_length!r} does not fit the body")
        n = int(header_length)
        head, tail = body[:n], body[n:]
    try:
        data = json.loads(head)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise OIPError(f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise OIPError("request body must be a JSON object")
    return data, tail


def _flatten(data: list[Any]) -> list[Any]:
    out: list[Any] = []
    for x in data:
        if isinstance(x, list):
            out.extend(_flatten(x))
        else:
            out.append(x)
    return out


def _decode_bytes_tensor(raw: bytes, n: int, name: str) -> list[str]:
    """The binary BYTES layout: per element a 4-byte little-endian length, then the bytes."""
    out: list[str] = []
    pos = 0
    for _ in range(n):
        if pos + 4 > len(raw):
            raise OIPError(f"input {name!r}: binary BYTES data ends early")
        (length,) = struct.unpack_from("<I", raw, pos)
        pos += 4
        if pos + length > len(raw):
            raise OIPError(f"input {name!r}: binary BYTES data ends early")
        out.append(raw[pos : pos + length].decode("utf-8", errors="replace"))
        pos += length
    if pos != len(raw):
        raise OIPError(f"input {name!r}: binary BYTES data holds more than {n} elements")
    return out


def _values(inp: InferInput, n: int, tail: bytes, offset: int) -> tuple[list[Any], int]:
    """The ``n`` values of one input (JSON data or its slice of the binary tail); returns the new offset."""
    size = inp.parameters.binary_data_size if inp.parameters is not None else None
    if size is not None:
        if inp.data is not None:
            raise OIPError(f"input {inp.name!r}: send either data or binary_data_size, not both")
        raw = tail[offset : offset + size]
        if len(raw) != size:
            raise OIPError(f"input {inp.name!r}: binary_data_size {size} exceeds the binary data sent")
        if inp.datatype == "BYTES":
            return _decode_bytes_tensor(raw, n, inp.name), offset + size
        dtype = np.dtype(NUMERIC_TYPES[inp.datatype])
        if size != n * dtype.itemsize:
            raise OIPError(f"input {inp.name!r}: {size} bytes is not {n} x {inp.datatype}")
        return np.frombuffer(raw, dtype=dtype).tolist(), offset + size
    if inp.data is None:
        raise OIPError(f"input {inp.name!r}: no data")
    values = _flatten(inp.data)
    if len(values) != n:
        raise OIPError(f"input {inp.name!r}: shape {inp.shape} says {n} values, data has {len(values)}")
    return values, offset


def _check_value(value: Any, datatype: str, name: str) -> Scalar:
    if datatype == "BYTES":
        if not isinstance(value, str):
            raise OIPError(f"input {name!r}: BYTES data must be strings, got {type(value).__name__}")
        return value if value != "" else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise OIPError(f"input {name!r}: {datatype} data must be numbers, got {type(value).__name__}")
    if datatype.startswith("INT") and not float(value).is_integer():
        raise OIPError(f"input {name!r}: {datatype} data must be integers, got {value!r}")
    if isinstance(value, float) and math.isnan(value):
        return None  # NaN = missing: the field's fill value, as in /predict's null
    return value


def parse_infer(body: bytes, header_length: str | None, schema: BundleSchema, max_rows: int) -> ParsedInfer:
    """Validate a v2 infer request against the served schema and turn its tensors into rows."""
    data, tail = split_body(body, header_length)
    try:
        req = InferRequest.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise OIPError(f"invalid infer request: {where}: {first['msg']}") from None
    by_name = {f.name: f for f in schema.fields}
    seen: dict[str, InferInput] = {}
    for inp in req.inputs:
        f = by_name.get(inp.name)
        if f is None:
            raise OIPError(f"unknown input {inp.name!r}; the model's inputs are {list(by_name)}")
        if inp.name in seen:
            raise OIPError(f"input {inp.name!r} is sent twice")
        allowed = CATEGORICAL_TYPES if f.kind == "categorical" else set(NUMERIC_TYPES)
        if inp.datatype not in allowed:
            want = "BYTES" if f.kind == "categorical" else "FP32"
            raise OIPError(f"input {inp.name!r} is {f.kind}: datatype must be {want}, got {inp.datatype!r}")
        seen[inp.name] = inp
    missing = [name for name in by_name if name not in seen]
    if missing:
        raise OIPError(f"missing inputs {missing}; every field of the model is required")
    shapes = {tuple(inp.shape) for inp in req.inputs}
    n = req.inputs[0].shape[0]
    if any(len(s) == 2 and s[1] != 1 for s in shapes) or len({s[0] for s in shapes}) != 1 or n < 1:
        raise OIPError(
            f"every input must have shape [rows] or [rows, 1] with the same rows >= 1, got {shapes}"
        )
    if n > max_rows:
        raise OIPError(f"too many rows: {n} > max {max_rows} per request (DLF_MAX_REQUEST_ROWS)")
    rows: list[dict[str, Scalar]] = [{} for _ in range(n)]
    offset = 0
    for inp in req.inputs:
        values, offset = _values(inp, n, tail, offset)
        for row, value in zip(rows, values, strict=True):
            row[inp.name] = _check_value(value, inp.datatype, inp.name)
    if offset != len(tail):
        raise OIPError(f"{len(tail) - offset} bytes of binary data are not claimed by any input")
    binary_output = bool((req.parameters or {}).get("binary_data_output", False))
    for out in req.outputs or []:
        if out.name != OUTPUT_NAME:
            raise OIPError(f"unknown output {out.name!r}; the model's output is {OUTPUT_NAME!r}")
        if out.parameters is not None and out.parameters.binary_data is not None:
            binary_output = out.parameters.binary_data
    return ParsedInfer(req, rows, binary_output)


def infer_response(
    parsed: ParsedInfer, model_name: str, version: str, probs: np.ndarray, extra: dict[str, Any]
) -> tuple[bytes, dict[str, str]]:
    """(body, headers) of the answer: JSON data, or a JSON header + raw little-endian FP32 bytes."""
    probs = np.asarray(probs, dtype="<f4").reshape(-1)
    output: dict[str, Any] = {"name": OUTPUT_NAME, "datatype": "FP32", "shape": [int(probs.shape[0])]}
    raw = b""
    if parsed.binary_output:
        raw = probs.tobytes()
        output["parameters"] = {"binary_data_size": len(raw)}
    else:
        output["data"] = probs.tolist()
    answer: dict[str, Any] = {"model_name": model_name, "model_version": version, "outputs": [output]}
    if parsed.request.id is not None:
        answer["id"] = parsed.request.id
    answer["parameters"] = extra
    head = json.dumps(answer, separators=(",", ":")).encode()
    if not parsed.binary_output:
        return head, {"content-type": "application/json"}
    return head + raw, {
        "content-type": "application/octet-stream",
        "inference-header-content-length": str(len(head)),
    }
