"""Score a data file with a bundle through onnxruntime: the numbers serving would produce."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from service.contract import CAT_INPUT, NUM_INPUT, PROB_OUTPUT, BundleSchema, load_schema
from training.data.readers import iter_batches
from training.data.spec import DatasetSpec, FieldSpec, resolve_spec
from training.data.vocab import FeatureSpace
from training.fitting.metrics import auc_logloss


def space_from_bundle(bundle_dir: str | Path, schema: BundleSchema | None = None) -> FeatureSpace:
    """The FeatureSpace a bundle was trained with (fields + vocab lists)."""
    bundle_dir = Path(bundle_dir)
    schema = schema or load_schema(bundle_dir)
    vocabs = {f.name: json.loads((bundle_dir / str(f.vocab_file)).read_text()) for f in schema.categorical}
    return FeatureSpace(fields=list(schema.fields), vocabs=vocabs, label=schema.label)


def spec_from_bundle(schema: BundleSchema, fmt: str) -> DatasetSpec:
    """A reader spec for csv/parquet files laid out like the training data (label + field columns)."""
    fields = [FieldSpec(name=f.name, type=f.kind) for f in schema.fields]
    return DatasetSpec(label=schema.label, fields=fields, format=fmt)  # type: ignore[arg-type]


def evaluate_bundle(
    bundle_dir: str | Path,
    data_path: str | Path,
    *,
    fmt: str = "csv",
    schema_path: str | Path | None = None,
    batch_rows: int = 8192,
    progress: bool = False,
) -> dict[str, Any]:
    """AUC / logloss of the bundle's model.onnx on every row of ``data_path``."""
    bundle_dir = Path(bundle_dir)
    schema = load_schema(bundle_dir)
    space = space_from_bundle(bundle_dir, schema)
    if fmt in ("csv", "parquet") and schema_path is None:
        spec = spec_from_bundle(schema, fmt)
    else:
        spec = resolve_spec(fmt, schema_path)
    bundle_names = [f.name for f in schema.fields]
    missing = [n for n in bundle_names if n not in {f.name for f in spec.fields}]
    if missing:
        raise ValueError(f"data set lacks fields the bundle needs: {missing}")
    sess = ort.InferenceSession(str(bundle_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    inputs = {i.name for i in sess.get_inputs()}
    ys, ps = [], []
    for batch in iter_batches(data_path, spec, columns=bundle_names, progress=progress, desc="evaluate"):
        cat, num, y = space.encode(batch)
        for s in range(0, len(y), batch_rows):
            feeds = {}
            if CAT_INPUT in inputs:
                feeds[CAT_INPUT] = cat[s : s + batch_rows]
            if NUM_INPUT in inputs:
                feeds[NUM_INPUT] = num[s : s + batch_rows]
            (p,) = sess.run([PROB_OUTPUT], feeds)
            ps.append(p)
        ys.append(y)
    if not ys:
        raise ValueError(f"{data_path} holds no rows")
    out = auc_logloss(np.concatenate(ys), np.concatenate(ps))
    return {"bundle": str(bundle_dir), "version": schema.version, "data": str(data_path), **out}
