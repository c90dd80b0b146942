"""Bundles past ONNX's 2 GB limit: per-tensor external files are gathered into one model.onnx.data.

The real >2 GB export runs in bench/big_vocab.py (docs/scaling.md); here the
TorchScript exporter's per-initializer layout is reproduced on a small model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from model import build_model
from model.config import ModelConfig
from training.bundle.export import EXTERNAL_DATA_NAME, export_onnx, gather_external_data, parity_inputs


def test_per_tensor_external_files_become_one_data_file(tmp_path: Path) -> None:
    torch.manual_seed(0)
    cards = [50, 7]
    net = build_model(
        "dlf", cards, 1, ModelConfig(embedding_dim=8, num_layers=1, num_tokens=4, rank=4)
    ).eval()
    path = tmp_path / "model.onnx"
    info = export_onnx(net, cards, 1, path)
    assert "external_data" not in info and sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]
    feeds = parity_inputs(cards, 1, rows=64)
    (before,) = ort.InferenceSession(str(path)).run(None, feeds)

    # what the TorchScript exporter writes past 2 GB: one file per initializer next to the model
    model = onnx.load(str(path))
    onnx.save_model(
        model, str(path), save_as_external_data=True, all_tensors_to_one_file=False, size_threshold=0
    )
    assert len(list(tmp_path.iterdir())) > 2

    size = gather_external_data(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", EXTERNAL_DATA_NAME]
    assert size == (tmp_path / EXTERNAL_DATA_NAME).stat().st_size > 0
    (after,) = ort.InferenceSession(str(path)).run(None, feeds)
    np.testing.assert_array_equal(before, after)
    offsets = [
        int(e.value)
        for t in onnx.load(str(path), load_external_data=False).graph.initializer
        for e in t.external_data
        if e.key == "offset"
    ]
    assert offsets and all(o % 4096 == 0 for o in offsets)  # aligned for memory mapping
