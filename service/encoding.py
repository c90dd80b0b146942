"""Raw JSON records -> model inputs (int64 ids, float32 numerics) with precise errors.

Split in two steps so the feature store sits in between: ``parse_records``
validates and canonicalises (no I/O), the caller resolves the unique
``(field, key)`` pairs to ids, then ``assign_ids`` builds the id matrix and
counts OOV values. Nothing here raises on an unknown category: that is OOV, not
an error.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from operator import itemgetter
from typing import Any

import numpy as np

from service.contract import OOV_ID, BundleSchema, FieldSchema, canonical_value

MAX_REPORTED_ERRORS = 20


@dataclass(frozen=True)
class FieldError:
    """One problem with one value; ``record``/``field`` are None for request-level problems."""

    record: int | None
    field: str | None
    message: str

    def describe(self, row_label: str = "record") -> str:
        where = []
        if self.record is not None:
            where.append(f"{row_label} {self.record}")
        if self.field is not None:
            where.append(f"field {self.field!r}")
        return f"{', '.join(where)}: {self.message}" if where else self.message


class EncodingError(ValueError):
    """The request cannot be encoded; carries every problem found (up to a cap)."""

    def __init__(self, errors: Sequence[FieldError], row_label: str = "record") -> None:
        self.errors = list(errors)
        self.row_label = row_label
        super().__init__("; ".join(e.describe(row_label) for e in self.errors))


@dataclass
class ParsedRecords:
    """Validated records: canonical categorical keys per field (column-wise) and normalised numerics."""

    n_rows: int
    cat_fields: list[FieldSchema]
    cat_keys: list[list[str]]  # [F_cat][n_rows]
    numerics: np.ndarray  # float32 [n_rows, F_num]

    def unique_keys(self) -> dict[str, set[str]]:
        """Distinct keys per categorical field: what the feature store has to resolve."""
        return {f.name: set(keys) for f, keys in zip(self.cat_fields, self.cat_keys, strict=True)}


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def numeric_value(value: Any, f: FieldSchema) -> float:
    """Normalise one raw numeric value like training did; raises ValueError with the reason."""
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return float(f.fill)
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"expected a number, got {_type_name(value)}")
    try:
        x = float(value)
    except (ValueError, OverflowError):
        shown = value if len(str(value)) <= 40 else str(value)[:40] + "..."
        raise ValueError(f"expected a number, got {_type_name(value)} {shown!r}") from None
    if not math.isfinite(x):
        raise ValueError(f"must be a finite number, got {x!r}")
    if f.transform == "log1p":
        if x <= -1.0:
            raise ValueError(f"must be > -1 for the log1p transform, got {x!r}")
        x = math.log1p(x)
    return (x - f.mean) / f.std


def categorical_key(value: Any) -> str:
    """Canonical vocabulary key of one raw categorical value; nested values are rejected."""
    if value is not None and not isinstance(value, str | int | float | bool):
        raise ValueError(f"expected a string or number, got {_type_name(value)}")
    return canonical_value(value)


def _canonical_column(values: list[Any]) -> list[str]:
    """Keys of one categorical column; non-empty strings (the usual case) are their own keys, and a
    column of only those is recognised with C-level ``map``/``set``/``in`` instead of a Python loop."""
    if set(map(type, values)) == {str} and "" not in values:
        return values
    return [v if type(v) is str and v else categorical_key(v) for v in values]


def _numeric_column(values: list[Any], f: FieldSchema) -> np.ndarray:
    """One numeric column normalised with numpy; raises ValueError when any value needs the slow path."""
    if not all(type(v) is float or type(v) is int for v in values):
        raise ValueError("not all plain numbers")
    x = np.asarray(values, dtype=np.float64)
    if not np.isfinite(x).all():
        raise ValueError("non-finite")
    if f.transform == "log1p":
        if (x <= -1.0).any():
            raise ValueError("out of log1p range")
        x = np.log1p(x)
    return (x - f.mean) / f.std


def _parse_columns(
    records: Sequence[Mapping[str, Any]], cat_fields: list[FieldSchema], num_fields: list[FieldSchema]
) -> tuple[list[list[str]], np.ndarray] | None:
    """Column-at-a-time parse of well-formed records; None sends the request to the precise row loop.

    The row loop below names every bad record and field; this path only has to
    be right for valid input, and is several times faster on it (one list
    comprehension per field instead of a Python call per value).
    """
    try:
        cat_keys = [_canonical_column(list(map(itemgetter(f.name), records))) for f in cat_fields]
        numerics = np.empty((len(records), len(num_fields)), dtype=np.float32)
        for j, f in enumerate(num_fields):
            numerics[:, j] = _numeric_column(list(map(itemgetter(f.name), records)), f)
    except (KeyError, ValueError, TypeError, OverflowError):
        return None
    return cat_keys, numerics


def parse_records(
    records: Sequence[Mapping[str, Any]],
    schema: BundleSchema,
    *,
    max_rows: int,
    row_label: str = "record",
) -> ParsedRecords:
    """Validate ``records`` against ``schema``; collect all problems (capped) into one EncodingError."""
    n = len(records)
    if n == 0:
        raise EncodingError([FieldError(None, None, f"no {row_label}s: send at least one")], row_label)
    if n > max_rows:
        raise EncodingError(
            [FieldError(None, None, f"too many {row_label}s: {n} > max {max_rows} per request")], row_label
        )
    cat_fields, num_fields = schema.categorical, schema.numeric
    fast = _parse_columns(records, cat_fields, num_fields)
    if fast is not None:
        return ParsedRecords(n_rows=n, cat_fields=cat_fields, cat_keys=fast[0], numerics=fast[1])
    cat_keys: list[list[str]] = [[""] * n for _ in cat_fields]
    numerics = np.empty((n, len(num_fields)), dtype=np.float32)
    errors: list[FieldError] = []
    for i, record in enumerate(records):
        for j, f in enumerate(cat_fields):
            if f.name not in record:
                errors.append(FieldError(i, f.name, "missing (categorical field is required)"))
                continue
            try:
                cat_keys[j][i] = categorical_key(record[f.name])
            except ValueError as exc:
                errors.append(FieldError(i, f.name, str(exc)))
        for j, f in enumerate(num_fields):
            if f.name not in record:
                errors.append(FieldError(i, f.name, "missing (numeric field is required)"))
                continue
            try:
                numerics[i, j] = numeric_value(record[f.name], f)
            except ValueError as exc:
                errors.append(FieldError(i, f.name, str(exc)))
        if len(errors) >= MAX_REPORTED_ERRORS:
            break
    if errors:
        raise EncodingError(errors[:MAX_REPORTED_ERRORS], row_label)
    return ParsedRecords(n_rows=n, cat_fields=cat_fields, cat_keys=cat_keys, numerics=numerics)


def assign_ids(
    parsed: ParsedRecords, ids: Mapping[str, Mapping[str, int]]
) -> tuple[np.ndarray, dict[str, int]]:
    """Build the int64 [B, F_cat] id matrix; keys absent from ``ids`` become OOV and are counted.

    ``map`` over the dict's ``get`` and ``list.count`` keep the per-value work in C, and the
    columns become one array in one conversion: 94 -> 68 us for a 100-row Frappe request
    (``python -m bench.request_pieces``).
    """
    if not parsed.cat_fields:
        return np.full((parsed.n_rows, 0), OOV_ID, dtype=np.int64), {}
    oov: dict[str, int] = {}
    columns: list[list[int]] = []
    for f, keys in zip(parsed.cat_fields, parsed.cat_keys, strict=True):
        column = list(map(ids.get(f.name, {}).get, keys, repeat(f.oov_id, len(keys))))
        misses = column.count(f.oov_id)
        if misses:
            oov[f.name] = misses
        columns.append(column)
    return np.ascontiguousarray(np.array(columns, dtype=np.int64).T), oov
