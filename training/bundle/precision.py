"""Cheaper exported graphs, gated on quality: int8 (ONNX Runtime dynamic quantisation) and fp16.

The fp32 graph is scored on the valid split through ONNX Runtime (what serving computes); a
variant is kept only if its valid AUC is at most ``max_auc_drop`` below that, and the drop is
recorded either way (metrics.json ``export.precision``). Accepted int8 replaces ``model.onnx``
(the fp32 graph stays beside it as ``model.fp32.onnx``). fp16 is meant for the CUDA provider: it
is written beside the fp32 graph as ``model.fp16.onnx`` and scored on whatever provider this
machine has (CPU here), so its gate runs where it is trained.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from service.contract import CAT_INPUT, NUM_INPUT, PROB_OUTPUT
from training.config import ExportConfig
from training.data.dataset import Split
from training.data.vocab import FeatureSpace
from training.fitting.metrics import auc_logloss

log = logging.getLogger("training")
SCORE_BATCH = 8192


def providers() -> list[str]:
    """CUDA first when this onnxruntime build has it (fp16 is meant for it), CPU always."""
    have = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in have]


def score_onnx(path: str | Path, split: Split, space: FeatureSpace) -> dict[str, float]:
    """AUC/logloss of an ONNX graph on an encoded split (same inputs as serving feeds)."""
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=providers())
    names = {i.name for i in sess.get_inputs()}
    out = []
    for start in range(0, len(split), SCORE_BATCH):
        cat, num, _ = split.take(np.arange(start, min(start + SCORE_BATCH, len(split))))
        feeds: dict[str, np.ndarray] = {}
        if CAT_INPUT in names:
            feeds[CAT_INPUT] = np.ascontiguousarray(cat, dtype=np.int64)
        if NUM_INPUT in names:
            feeds[NUM_INPUT] = np.ascontiguousarray(num, dtype=np.float32)
        (p,) = sess.run([PROB_OUTPUT], feeds)
        out.append(np.asarray(p, dtype=np.float64).ravel())
    return auc_logloss(split.labels(), np.concatenate(out))


def quantize_int8(src: Path, dst: Path) -> None:
    """Dynamic int8 quantisation of MatMul/Gemm weights (activations quantised at run time)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)


def convert_fp16(src: Path, dst: Path) -> None:
    """fp16 weights and activations, fp32 inputs/outputs (callers keep feeding float32 / int64)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    onnx.save(model, str(dst))


def export_precision(
    model_path: Path, cfg: ExportConfig, valid: Split, space: FeatureSpace
) -> dict[str, Any]:
    """Apply ``cfg.precision`` to the exported fp32 ``model_path`` under the AUC gate; returns the record."""
    fp32 = score_onnx(model_path, valid, space)
    record: dict[str, Any] = {
        "requested": cfg.precision,
        "served": "fp32",
        "valid_fp32": fp32,
        "valid_served": fp32,
    }
    if cfg.precision == "fp32":
        return record
    variant = model_path.with_name(f"model.{cfg.precision}.onnx")
    try:
        (quantize_int8 if cfg.precision == "int8" else convert_fp16)(model_path, variant)
        scored = score_onnx(variant, valid, space)
    except Exception as e:  # noqa: BLE001 - a variant that cannot be built or run is refused, fp32 kept
        variant.unlink(missing_ok=True)
        log.warning("%s export refused: %s", cfg.precision, e)
        return record | {"accepted": False, "reason": f"{type(e).__name__}: {e}"}
    drop = fp32["auc"] - scored["auc"]
    record |= {
        "valid_variant": scored,
        "auc_drop": drop,
        "max_auc_drop": cfg.max_auc_drop,
        "bytes": {"fp32": model_path.stat().st_size, cfg.precision: variant.stat().st_size},
    }
    if drop > cfg.max_auc_drop:
        variant.unlink()
        log.warning("%s export refused: valid AUC drop %.5f > %.5f", cfg.precision, drop, cfg.max_auc_drop)
        return record | {"accepted": False, "reason": f"valid AUC drop {drop:.5f} > {cfg.max_auc_drop}"}
    if cfg.precision == "int8":  # int8 runs on every provider: it becomes the served graph
        os.replace(model_path, model_path.with_name("model.fp32.onnx"))
        os.replace(variant, model_path)
        record |= {"served": "int8", "valid_served": scored}
    return record | {"accepted": True, "file": model_path.name if cfg.precision == "int8" else variant.name}
