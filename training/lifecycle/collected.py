"""Training data from collected shards, alone or mixed with a base data set, as ONE Parquet file.

``retrain`` splits one file by fraction, so the shards listed in
``<collected>/collect-state.json`` (and optionally a base file in any supported
format) are streamed into a single Parquet file with the shards' schema:
label + the bundle's fields, categorical values as canonical strings (so ``266``
in a CSV and ``"266"`` in a shard are the same key), numerics as float64.
``schema.yaml`` from the collect directory describes it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from training.data.readers import LABEL, iter_batches
from training.data.spec import DatasetSpec, resolve_spec
from training.data.vocab import canonical
from training.lifecycle.collect import SCHEMA_FILE, shard_paths


def _normalised(batch: pa.RecordBatch, spec: DatasetSpec, out_schema: pa.Schema) -> pa.RecordBatch:
    """A reader batch (``label`` + fields) in the output's column names and types."""
    cols = [batch.column(LABEL).cast(pa.int64())]
    for f in spec.fields:
        col = batch.column(f.name)
        cols.append(canonical(col) if f.type == "categorical" else col.cast(pa.float64()))
    return pa.RecordBatch.from_arrays(cols, schema=out_schema)


def collected_dataset(
    collected: str | Path,
    out_path: str | Path,
    *,
    base: str | Path | None = None,
    base_format: str = "csv",
    base_schema: str | Path | None = None,
) -> tuple[Path, Path, dict[str, int]]:
    """Write ``out_path`` (Parquet); returns (data file, its schema file, rows per source)."""
    collected = Path(collected)
    schema_file = collected / SCHEMA_FILE
    shards = shard_paths(collected)
    if not shards or not schema_file.exists():
        raise FileNotFoundError(f"{collected} holds no collected shards (run `collect` first)")
    spec = resolve_spec("parquet", schema_file, None)
    out_schema = pa.schema(
        [pa.field(spec.label, pa.int64())]
        + [pa.field(f.name, pa.string() if f.type == "categorical" else pa.float64()) for f in spec.fields]
    )
    sources: list[tuple[str, Path, DatasetSpec]] = [("collected", p, spec) for p in shards]
    if base is not None:
        bspec = resolve_spec(base_format, base_schema, None)
        kinds = {f.name: f.type for f in bspec.fields}
        wrong = [f.name for f in spec.fields if kinds.get(f.name) != f.type]
        if wrong:
            raise ValueError(f"base data set lacks fields {wrong} (or has them with another type)")
        sources.append(("base", Path(base), bspec))
    names = [f.name for f in spec.fields]
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.tmp{os.getpid()}")
    counts: dict[str, int] = {"collected": 0, "base": 0}
    try:
        with pq.ParquetWriter(tmp, out_schema) as writer:
            for kind, path, sspec in sources:
                for batch in iter_batches(path, sspec, columns=names):
                    writer.write_batch(_normalised(batch, spec, out_schema))
                    counts[kind] += batch.num_rows
        os.replace(tmp, out_path)
    finally:
        tmp.unlink(missing_ok=True)
    return out_path, schema_file, counts
