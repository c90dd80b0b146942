"""Dataset descriptions: which columns are the label and the fields, and how to read them.

One ``DatasetSpec`` drives every reader, so Frappe, Criteo, Avazu and user CSV/Parquet
files all come out as the same Arrow batches (``label`` + one column per field).
User files describe themselves with a small YAML or JSON schema file::

    label: click
    delimiter: ","          # CSV only, optional
    fields:
      - {name: user, type: categorical, min_count: 2}
      - {name: price, type: numeric, transform: log1p}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

FormatName = Literal["frappe", "criteo", "avazu", "csv", "parquet"]
FORMATS: tuple[str, ...] = ("frappe", "criteo", "avazu", "csv", "parquet")

FRAPPE_FIELDS = [
    "user",
    "item",
    "daytime",
    "weekday",
    "isweekend",
    "homework",
    "cost",
    "weather",
    "country",
    "city",
]
CRITEO_NUMERIC = [f"I{i}" for i in range(1, 14)]
CRITEO_CATEGORICAL = [f"C{i}" for i in range(1, 27)]
# Avazu: raw column ``hour`` (YYMMDDHH) is replaced by derived hour_of_day / day_of_week,
# because raw timestamps never recur between train and serving time.
AVAZU_RAW_CATEGORICAL = [
    "C1",
    "banner_pos",
    "site_id",
    "site_domain",
    "site_category",
    "app_id",
    "app_domain",
    "app_category",
    "device_id",
    "device_ip",
    "device_model",
    "device_type",
    "device_conn_type",
    *[f"C{i}" for i in range(14, 22)],
]
AVAZU_CATEGORICAL = ["hour_of_day", "day_of_week", *AVAZU_RAW_CATEGORICAL]


class FieldSpec(BaseModel):
    """One input field as the schema file names it."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    type: Literal["categorical", "numeric"]
    min_count: int | None = Field(default=None, ge=1)
    # numeric only; "auto" = log1p when the train minimum is >= 0, identity otherwise
    transform: Literal["auto", "identity", "log1p"] = "auto"

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        if "/" in v or v.startswith(".") or v == "label":
            raise ValueError(f"field name {v!r} is not allowed (no '/', no leading '.', not 'label')")
        return v


class DatasetSpec(BaseModel):
    """Label column + fields of one data set, plus reader options."""

    model_config = ConfigDict(extra="forbid")

    label: str = "label"
    fields: list[FieldSpec] = Field(min_length=1)
    delimiter: str = ","
    min_count: int = Field(default=1, ge=1)  # default threshold for fields that set none
    format: FormatName | None = None

    @model_validator(mode="after")
    def _unique_names(self) -> DatasetSpec:
        names = [f.name for f in self.fields]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"duplicate field names: {dup}")
        if self.label in names:
            raise ValueError(f"label column {self.label!r} is also listed as a field")
        return self

    @property
    def categorical(self) -> list[FieldSpec]:
        return [f for f in self.fields if f.type == "categorical"]

    @property
    def numeric(self) -> list[FieldSpec]:
        return [f for f in self.fields if f.type == "numeric"]

    def min_count_of(self, f: FieldSpec) -> int:
        return f.min_count if f.min_count is not None else self.min_count


def load_spec(path: str | Path) -> DatasetSpec:
    """Read a YAML/JSON schema file; errors name the file and the offending entry."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ValueError(f"cannot read schema file {path}: {e}") from e
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise ValueError(f"schema file {path} is not valid {path.suffix or 'YAML'}: {e}") from e
    if not isinstance(data, dict):
        raise ValueError(f"schema file {path} must hold a mapping with 'label' and 'fields'")
    try:
        return DatasetSpec.model_validate(data)
    except ValidationError as e:
        raise ValueError(f"schema file {path} is invalid: {e}") from e


def builtin_spec(fmt: str, min_count: int = 1) -> DatasetSpec:
    """The fixed layout of the public benchmark formats."""
    if fmt == "frappe":
        fields = [FieldSpec(name=n, type="categorical") for n in FRAPPE_FIELDS]
        return DatasetSpec(label="label", fields=fields, delimiter=" ", min_count=min_count, format="frappe")
    if fmt == "criteo":
        fields = [FieldSpec(name=n, type="numeric") for n in CRITEO_NUMERIC]
        fields += [FieldSpec(name=n, type="categorical") for n in CRITEO_CATEGORICAL]
        return DatasetSpec(label="label", fields=fields, delimiter="\t", min_count=min_count, format="criteo")
    if fmt == "avazu":
        fields = [FieldSpec(name=n, type="categorical") for n in AVAZU_CATEGORICAL]
        return DatasetSpec(label="click", fields=fields, delimiter=",", min_count=min_count, format="avazu")
    raise ValueError(f"format {fmt!r} has no built-in layout; pass --schema (formats: {', '.join(FORMATS)})")


def resolve_spec(fmt: str, schema: str | Path | None, min_count: int | None = None) -> DatasetSpec:
    """Spec for a format: built-in for frappe/criteo/avazu, from the schema file for csv/parquet."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if fmt in ("csv", "parquet"):
        if schema is None:
            raise ValueError(f"format {fmt!r} needs a schema file (--schema)")
        spec = load_spec(schema)
        spec = spec.model_copy(update={"format": fmt})
        if min_count is not None:
            spec = spec.model_copy(update={"min_count": min_count})
        return spec
    if schema is not None:
        raise ValueError(f"format {fmt!r} has a fixed layout; do not pass --schema")
    return builtin_spec(fmt, min_count=min_count or 1)
