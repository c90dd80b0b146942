"""Deterministic CTR-like synthetic data (CSV or Parquet + schema file) for demos and tests.

Fields: ``user`` (string ids, skewed), ``item`` (integer ids), ``device`` (few values,
some missing), ``hour`` (0-23) are categorical; ``price`` (log-normal, some missing) and
``age`` are numeric. The click logit has per-user/per-item biases, a planted pairwise
interaction (user group == item group), and smooth effects of hour, price and age, so a
model that learns interactions scores clearly above one that cannot.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import yaml

from service.contract import atomic_write_text

SCHEMA = {
    "label": "click",
    "fields": [
        {"name": "user", "type": "categorical", "min_count": 2},
        {"name": "item", "type": "categorical"},
        {"name": "device", "type": "categorical"},
        {"name": "hour", "type": "categorical"},
        {"name": "price", "type": "numeric", "transform": "log1p"},
        {"name": "age", "type": "numeric"},
    ],
}


@dataclass(frozen=True)
class SyntheticFiles:
    data: Path
    schema: Path
    fmt: Literal["csv", "parquet"]
    rows: int


def synthetic_table(rows: int = 20_000, seed: int = 0, n_users: int = 200, n_items: int = 50) -> pa.Table:
    """The data as an Arrow table (same seed -> same rows)."""
    if rows < 1:
        raise ValueError(f"rows must be >= 1, got {rows}")
    rng = np.random.default_rng(seed)
    user_bias = rng.normal(0, 0.6, n_users)
    item_bias = rng.normal(0, 0.6, n_items)
    user_group = rng.integers(0, 4, n_users)
    item_group = rng.integers(0, 4, n_items)
    # skewed popularity, like real id fields
    u = np.minimum(rng.zipf(1.3, rows) - 1, n_users - 1) if n_users > 1 else np.zeros(rows, np.int64)
    u = rng.permutation(n_users)[u]
    i = rng.integers(0, n_items, rows)
    devices = np.array(["mobile", "desktop", "tablet"])
    d = rng.choice(3, rows, p=[0.6, 0.3, 0.1])
    d_missing = rng.random(rows) < 0.05
    h = rng.integers(0, 24, rows)
    price = rng.lognormal(3.0, 1.0, rows)
    price_missing = rng.random(rows) < 0.05
    age = rng.normal(35, 10, rows).round(1)
    logit = (
        -1.0
        + user_bias[u]
        + item_bias[i]
        + np.where(user_group[u] == item_group[i], 2.0, -0.7)  # planted pairwise interaction
        + np.array([0.3, -0.2, 0.0])[d]
        + 0.5 * np.sin(2 * np.pi * h / 24)
        - 0.4 * (np.log1p(price) - 3.0)
        + 0.02 * (age - 35)
    )
    click = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    return pa.table(
        {
            "click": click,
            "user": pa.array([f"u{x}" for x in u]),
            "item": pa.array(i.astype(np.int64)),
            "device": pa.array(np.where(d_missing, "", devices[d])),
            "hour": pa.array(h.astype(np.int64)),
            "price": pa.array(np.round(price, 2), mask=price_missing),
            "age": pa.array(age),
        }
    )


def generate(
    out_dir: str | Path, rows: int = 20_000, seed: int = 0, fmt: Literal["csv", "parquet"] = "csv"
) -> SyntheticFiles:
    """Write ``synthetic.<csv|parquet>`` and ``schema.yaml`` into ``out_dir`` (atomically)."""
    if fmt not in ("csv", "parquet"):
        raise ValueError(f"fmt must be 'csv' or 'parquet', got {fmt!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = synthetic_table(rows, seed)
    data = out / f"synthetic.{fmt}"
    tmp = out / f".{data.name}.tmp"
    if fmt == "csv":
        pacsv.write_csv(table, tmp)
    else:
        pq.write_table(table, tmp)
    tmp.replace(data)
    schema = out / "schema.yaml"
    atomic_write_text(schema, yaml.safe_dump(SCHEMA, sort_keys=False))
    return SyntheticFiles(data=data, schema=schema, fmt=fmt, rows=rows)
