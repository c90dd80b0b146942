"""Vocabularies and numeric statistics (from train only), and vectorised encoding.

Categorical values are keyed with ``service.contract.canonical_value`` (the serving
side uses the same function), missing values become ``__missing__`` which is an
ordinary vocabulary entry when frequent enough; everything below the min-count, or
unseen in train, maps to the OOV id 0. Numeric fields: ``(transform(x) - mean) / std``
with train statistics, missing/non-finite -> ``fill``.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from service.contract import MISSING_TOKEN, OOV_ID, FieldSchema, canonical_value, fields_of_kind
from training.data.readers import LABEL
from training.data.spec import DatasetSpec


def canonical(col: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Canonical string keys of a column, same result as ``canonical_value`` per element."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        col = pc.cast(col, pa.string())
        col = pc.if_else(pc.equal(col, ""), MISSING_TOKEN, col)
        return pc.fill_null(col, MISSING_TOKEN)
    # Other types: canonicalise the (small) dictionary of distinct values in Python.
    enc = col if pa.types.is_dictionary(col.type) else col.dictionary_encode()
    keys = pa.array([canonical_value(v) for v in enc.dictionary.to_pylist()], type=pa.string())
    return pc.fill_null(pc.take(keys, enc.indices), MISSING_TOKEN)


def numeric_values(col: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """float64 numpy with NaN for missing."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    return pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64, copy=False)


@dataclass
class _NumStats:
    n: int = 0
    s: float = 0.0
    ss: float = 0.0
    ls: float = 0.0  # sums of log1p(max(x, 0))
    lss: float = 0.0
    lo: float = float("inf")

    def update(self, x: np.ndarray) -> None:
        x = x[np.isfinite(x)]
        if x.size == 0:
            return
        lx = np.log1p(np.maximum(x, 0.0))
        self.n += int(x.size)
        self.s += float(x.sum())
        self.ss += float((x * x).sum())
        self.ls += float(lx.sum())
        self.lss += float((lx * lx).sum())
        self.lo = min(self.lo, float(x.min()))


def _mean_std(n: int, s: float, ss: float) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    mean = s / n
    var = max(ss / n - mean * mean, 0.0)
    std = float(np.sqrt(var))
    return float(mean), (std if std > 1e-12 else 1.0)


@dataclass
class FeatureSpace:
    """Everything needed to turn raw batches into model inputs; saved into the bundle."""

    fields: list[FieldSchema]
    vocabs: dict[str, list[str]]
    label: str = "label"
    _value_sets: dict[str, pa.Array] = field(default_factory=dict, repr=False)

    @property
    def categorical(self) -> list[FieldSchema]:
        return fields_of_kind(self.fields, "categorical")

    @property
    def numeric(self) -> list[FieldSchema]:
        return fields_of_kind(self.fields, "numeric")

    @property
    def cardinalities(self) -> list[int]:
        return [f.vocab_size for f in self.categorical]

    def encode(self, batch: pa.RecordBatch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Batch -> (cat int64 [N, F_cat], num float32 [N, F_num], label float32 [N])."""
        n = batch.num_rows
        cat = np.empty((n, len(self.categorical)), dtype=np.int64)
        for f in self.categorical:
            vs = self._value_sets.get(f.name)
            if vs is None:
                vs = self._value_sets[f.name] = pa.array(self.vocabs[f.name], type=pa.string())
            pos = pc.index_in(canonical(batch.column(f.name)), value_set=vs)
            ids = pc.fill_null(pc.add(pos, 1), OOV_ID)
            cat[:, f.index] = ids.to_numpy(zero_copy_only=False)
        num = np.empty((n, len(self.numeric)), dtype=np.float32)
        for f in self.numeric:
            num[:, f.index] = normalise(numeric_values(batch.column(f.name)), f)
        y = batch.column(LABEL).to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
        return cat, num, y

    def save_vocabs(self, bundle_dir: str | Path) -> None:
        """Write ``vocab/<field>.json`` (list of canonical values, id = position + 1)."""
        for f in self.categorical:
            path = Path(bundle_dir) / str(f.vocab_file)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(self.vocabs[f.name]))


def normalise(x: np.ndarray, f: FieldSchema) -> np.ndarray:
    """Train-statistics normalisation; missing and non-finite values become ``fill``."""
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.log1p(x) if f.transform == "log1p" else x
        z = (t - f.mean) / f.std
    return np.where(np.isfinite(z), z, f.fill).astype(np.float32)


class StatsBuilder:
    """Streams over train batches counting categorical values and numeric moments."""

    def __init__(self, spec: DatasetSpec) -> None:
        self.spec = spec
        self.counts: dict[str, Counter[str]] = {f.name: Counter() for f in spec.categorical}
        self.nums: dict[str, _NumStats] = {f.name: _NumStats() for f in spec.numeric}
        self.rows = 0

    def update(self, batch: pa.RecordBatch, mask: np.ndarray | None = None) -> None:
        """Add a batch; ``mask`` (bool per row) keeps only train rows of a mixed file."""
        if mask is not None:
            batch = batch.filter(pa.array(mask))
        self.rows += batch.num_rows
        for name, counter in self.counts.items():
            vc = pc.value_counts(canonical(batch.column(name)))
            counter.update(
                dict(zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist(), strict=True))
            )
        for name, st in self.nums.items():
            st.update(numeric_values(batch.column(name)))

    def finish(self) -> FeatureSpace:
        if self.rows == 0:
            raise ValueError("no training rows: cannot build vocabularies")
        fields: list[FieldSchema] = []
        vocabs: dict[str, list[str]] = {}
        ci = ni = 0
        for f in self.spec.fields:
            if f.type == "categorical":
                mc = self.spec.min_count_of(f)
                kept = [(k, c) for k, c in self.counts[f.name].items() if c >= mc]
                kept.sort(key=lambda kc: (-kc[1], kc[0]))
                vocabs[f.name] = [k for k, _ in kept]
                fields.append(
                    FieldSchema(
                        name=f.name,
                        kind="categorical",
                        index=ci,
                        vocab_size=len(kept) + 1,
                        vocab_file=f"vocab/{f.name}.json",
                    )
                )
                ci += 1
            else:
                st = self.nums[f.name]
                transform = f.transform
                if transform == "auto":
                    transform = "log1p" if st.n and st.lo >= 0 else "identity"
                if transform == "log1p" and st.n and st.lo < 0:
                    raise ValueError(
                        f"field {f.name!r}: transform log1p needs values >= 0, train min is {st.lo}"
                    )
                mean, std = (
                    _mean_std(st.n, st.ls, st.lss) if transform == "log1p" else _mean_std(st.n, st.s, st.ss)
                )
                fields.append(
                    FieldSchema(
                        name=f.name,
                        kind="numeric",
                        index=ni,
                        transform=transform,
                        mean=mean,
                        std=std,
                        fill=0.0,
                    )
                )
                ni += 1
        return FeatureSpace(fields=fields, vocabs=vocabs, label=self.spec.label)


def build_feature_space(batches: Iterable[pa.RecordBatch], spec: DatasetSpec) -> FeatureSpace:
    """Convenience: stream every batch through a ``StatsBuilder``."""
    sb = StatsBuilder(spec)
    for b in batches:
        sb.update(b)
    return sb.finish()
