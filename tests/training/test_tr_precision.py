"""Cheaper exports are gated on valid AUC: int8 kept only within max_auc_drop, the drop is recorded."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import onnx
import pytest
import torch

import training.bundle.precision as precision
from training.bundle.precision import export_precision, score_onnx
from training.config import ExportConfig, TrainConfig
from training.data.synthetic import SyntheticFiles
from training.pipeline import train_bundle_outcome


def _train(synthetic_csv: SyntheticFiles, cfg: TrainConfig, registry: Path) -> Path:
    out = train_bundle_outcome(
        synthetic_csv.data, fmt="csv", schema=synthetic_csv.schema, valid_fraction=0.2, split_seed=1,
        config=cfg, registry=registry,
    )  # fmt: skip
    assert out.bundle_dir is not None
    return out.bundle_dir


def test_int8_within_tolerance_is_served_and_recorded(
    synthetic_csv: SyntheticFiles, tiny_cfg: Callable[..., TrainConfig], registry: Path
) -> None:
    cfg = tiny_cfg(epochs=2, lr=1e-2).replace(export={"precision": "int8", "max_auc_drop": 0.05})
    bundle = _train(synthetic_csv, cfg, registry)
    rec = json.loads((bundle / "metrics.json").read_text())["export"]["precision"]
    assert rec["requested"] == "int8" and rec["accepted"] is True and rec["served"] == "int8"
    assert rec["auc_drop"] == pytest.approx(rec["valid_fp32"]["auc"] - rec["valid_variant"]["auc"])
    assert rec["valid_served"] == rec["valid_variant"]
    assert abs(rec["auc_drop"]) <= 0.05
    ops = {n.op_type for n in onnx.load(str(bundle / "model.onnx")).graph.node}
    assert "DynamicQuantizeLinear" in ops or "MatMulInteger" in ops  # the served graph is the int8 one
    assert (bundle / "model.fp32.onnx").exists()
    assert set(rec["bytes"]) == {"fp32", "int8"}  # tiny nets: embeddings (not quantised) dominate the size


def test_a_variant_that_loses_auc_is_refused(
    synthetic_csv: SyntheticFiles,
    tiny_cfg: Callable[..., TrainConfig],
    registry: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A 'quantiser' that wrecks the graph (constant output) must be refused and fp32 kept."""
    fp32_bundle = _train(synthetic_csv, tiny_cfg(epochs=2, lr=1e-2), registry)
    from training.bundle.checkpoint import load_checkpoint
    from training.bundle.export import export_onnx

    net, _, space, _ = load_checkpoint(fp32_bundle / "checkpoint.pt")

    def wreck(src: Path, dst: Path) -> None:
        with torch.no_grad():
            for p in net.parameters():
                p.zero_()
        export_onnx(net, space.cardinalities, len(space.numeric), dst)

    monkeypatch.setattr(precision, "quantize_int8", wreck)
    from training.data.dataset import prepare_data
    from training.data.spec import resolve_spec

    data = prepare_data(synthetic_csv.data, resolve_spec("csv", synthetic_csv.schema, None), split_seed=1,
                        valid_fraction=0.2)  # fmt: skip
    model = fp32_bundle / "model.onnx"
    before = model.read_bytes()
    rec = export_precision(model, ExportConfig(precision="int8"), data.valid, data.space)
    assert rec["accepted"] is False and rec["served"] == "fp32" and rec["auc_drop"] > 0.0005
    assert "valid AUC drop" in rec["reason"]
    assert model.read_bytes() == before and not (fp32_bundle / "model.int8.onnx").exists()
    assert rec["valid_served"]["auc"] == pytest.approx(score_onnx(model, data.valid, data.space)["auc"])


def test_fp16_variant_is_written_beside_fp32_or_refused_with_a_reason(
    synthetic_csv: SyntheticFiles, tiny_cfg: Callable[..., TrainConfig], registry: Path
) -> None:
    cfg = tiny_cfg(epochs=1).replace(export={"precision": "fp16", "max_auc_drop": 0.0005})
    bundle = _train(synthetic_csv, cfg, registry)
    rec = json.loads((bundle / "metrics.json").read_text())["export"]["precision"]
    assert rec["served"] == "fp32"  # fp16 is for the CUDA provider; model.onnx stays fp32
    if rec["accepted"]:
        assert (bundle / "model.fp16.onnx").exists() and rec["auc_drop"] <= 0.0005
    else:
        assert rec["reason"] and not (bundle / "model.fp16.onnx").exists()
