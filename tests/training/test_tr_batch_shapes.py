"""Folding the exported graph's batch arithmetic: no Shape nodes left, same outputs at any batch."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from model import build_model, preset
from training.bundle.batch_shapes import fold_batch_shapes
from training.bundle.export import export_onnx, parity_inputs

TINY = dict(embedding_dim=8, num_layers=2, num_tokens=4, rank=4, block_hidden=16, head_hidden=16)
CARDS = [5, 7, 3]


def _outputs(model: onnx.ModelProto | Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(source, providers=["CPUExecutionProvider"]).run(None, feeds)


def _ops(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node]


@pytest.mark.parametrize("name", ["dlf", "dcnv2", "deepfm", "wukong"])
def test_exported_models_lose_their_shape_arithmetic(tmp_path: Path, name: str) -> None:
    torch.manual_seed(0)
    net = build_model(name, CARDS, 2, dataclasses.replace(preset("small"), **TINY)).eval()
    path = tmp_path / "m.onnx"
    info = export_onnx(net, CARDS, 2, path)
    before, after = info["batch_shapes"]["nodes"]
    model = onnx.load(str(path))
    assert "Shape" not in _ops(model) and len(model.graph.node) == after
    onnx.checker.check_model(model)
    if name == "dlf":  # its unflatten / split_heads reshapes are what the pass is for
        assert info["batch_shapes"]["folded"] > 0 and after < before / 2
    # batch sizes neither the probe (1, 2, 3, 5) nor the check (1, 7, 64) used, torch as the reference
    for rows in (4, 13, 301):
        feeds = parity_inputs(CARDS, 2, rows=rows, seed=rows)
        (p,) = _outputs(path, feeds)
        with torch.no_grad():
            logits = net(torch.from_numpy(feeds["cat_ids"]), torch.from_numpy(feeds["numerics"]))
        assert p.shape == (rows,)
        np.testing.assert_allclose(p, torch.sigmoid(logits).numpy(), atol=1e-5)


def _graph(nodes: list[onnx.NodeProto], y_rank: int) -> onnx.ModelProto:
    """x (batch, 4) -> ``nodes`` -> y (of rank ``y_rank``), with ``batch`` = Shape(x)[0:1] and a few int64 constants."""
    head = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "zero"], ["batch"], axis=0),
    ]
    constants = {"zero": [0], "two": [2], "six": [6], "two_two": [2, 2]}
    graph = helper.make_graph(
        [*head, *nodes],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [f"y{i}" for i in range(y_rank)])],
        [numpy_helper.from_array(np.array(v, np.int64), k) for k, v in constants.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def test_a_batch_times_constant_target_becomes_minus_one() -> None:
    model = _graph(
        [
            helper.make_node("Concat", ["batch", "two_two"], ["target"], axis=0),
            helper.make_node("Reshape", ["x", "target"], ["y"]),
        ],
        y_rank=3,
    )
    result = fold_batch_shapes(model)
    assert result.folded == 1 and _ops(result.model) == ["Constant", "Reshape"]
    target = numpy_helper.to_array(result.model.graph.node[0].attribute[0].t)
    assert target.tolist() == [-1, 2, 2]
    for rows in (1, 9):
        x = np.arange(rows * 4, dtype=np.float32).reshape(rows, 4)
        (y,) = _outputs(result.model, {"x": x})
        assert y.shape == (rows, 2, 2) and np.array_equal(y, x.reshape(rows, 2, 2))


def test_a_fold_that_only_looks_batch_free_is_refused(caplog: pytest.LogCaptureFixture) -> None:
    """x[: batch // 6 + 2]: the end is 2 at every probe batch (1, 2, 3, 5) but 3 at 7, so the check
    against the original graph refuses the fold."""
    model = _graph(
        [
            helper.make_node("Div", ["batch", "six"], ["sixths"]),
            helper.make_node("Add", ["sixths", "two"], ["end"]),
            helper.make_node("Slice", ["x", "zero", "end", "zero"], ["y"]),
        ],
        y_rank=2,
    )
    with caplog.at_level(logging.WARNING, logger="training"):
        result = fold_batch_shapes(model)
    assert result.folded == 0 and result.model is model
    assert "keeping the exported graph" in caplog.text
    (y,) = _outputs(result.model, {"x": np.zeros((7, 4), np.float32)})
    assert y.shape == (3, 4)
