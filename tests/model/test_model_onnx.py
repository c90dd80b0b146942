"""The small DLF exports to ONNX (opset 17, dynamic batch) and ONNX Runtime matches PyTorch."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from model_testutils import random_batch

from model import build_model, preset

CARDS = [958, 4083, 8, 8, 4, 4, 3, 10, 81, 234]
NUM_NUMERIC = 2


@pytest.mark.slow  # the torch.export-based exporter takes ~15 s on 2 shared cores
@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
def test_small_dlf_onnx_matches_torch(tmp_path: Path, dynamo: bool) -> None:
    net = build_model("dlf", CARDS, NUM_NUMERIC, preset("small"), seed=0).eval()
    path = tmp_path / "dlf.onnx"
    example = random_batch(CARDS, NUM_NUMERIC, batch=4, seed=0)
    if dynamo:
        batch = torch.export.Dim("batch")
        axes: dict[str, object] = {"dynamic_shapes": ({0: batch}, {0: batch})}
    else:
        axes = {"dynamic_axes": {"cat_ids": {0: "batch"}, "numerics": {0: "batch"}, "logit": {0: "batch"}}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            example,
            str(path),
            input_names=["cat_ids", "numerics"],
            output_names=["logit"],
            opset_version=17,
            dynamo=dynamo,
            **axes,
        )
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    assert {o.domain or "ai.onnx": o.version for o in model.opset_import}["ai.onnx"] == 17

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for rows in (1, 7):  # batch sizes other than the export example: the batch axis is dynamic
        cat_ids, numerics = random_batch(CARDS, NUM_NUMERIC, batch=rows, seed=rows)
        (got,) = session.run(None, {"cat_ids": cat_ids.numpy(), "numerics": numerics.numpy()})
        with torch.no_grad():
            expected = net(cat_ids, numerics).numpy()
        assert got.shape == (rows,)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
