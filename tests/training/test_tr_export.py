"""ONNX export: names, dynamic batch, omitted inputs, parity check that raises when broken."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from model import build_model, preset
from training.bundle.export import ExportParityError, check_parity, export_onnx, parity_inputs

TINY = dict(embedding_dim=8, num_layers=1, num_tokens=4, rank=4, block_hidden=16, head_hidden=16)


def _net(cards: list[int], n_num: int, name: str = "dlf") -> torch.nn.Module:
    import dataclasses

    torch.manual_seed(0)
    return build_model(name, cards, n_num, dataclasses.replace(preset("small"), **TINY)).eval()


def test_export_parity_and_signature(tmp_path: Path) -> None:
    net = _net([5, 7, 3], 2)
    info = export_onnx(net, [5, 7, 3], 2, tmp_path / "m.onnx")
    assert info["exporter"] == "torchscript" and info["opset"] == 17
    assert info["parity_max_abs_diff"] <= 1e-5 and info["parity_rows"] == 1000
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    ins = {i.name: i for i in sess.get_inputs()}
    assert set(ins) == {"cat_ids", "numerics"}
    assert ins["cat_ids"].type == "tensor(int64)" and ins["numerics"].type == "tensor(float)"
    assert isinstance(ins["cat_ids"].shape[0], str)  # dynamic batch axis
    assert [o.name for o in sess.get_outputs()] == ["probability"]
    for rows in (1, 37):
        feeds = parity_inputs([5, 7, 3], 2, rows=rows, seed=rows)
        (p,) = sess.run(["probability"], feeds)
        assert p.shape == (rows,) and ((p > 0) & (p < 1)).all()


@pytest.mark.parametrize(("cards", "n_num", "expected"), [([4, 6], 0, ["cat_ids"]), ([], 3, ["numerics"])])
def test_absent_inputs_are_omitted(tmp_path: Path, cards: list[int], n_num: int, expected: list[str]) -> None:
    net = _net(cards, n_num, name="fm")
    export_onnx(net, cards, n_num, tmp_path / "m.onnx")
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == expected


def test_broken_parity_raises(tmp_path: Path) -> None:
    net = _net([5, 7], 1)
    export_onnx(net, [5, 7], 1, tmp_path / "m.onnx")
    other = copy.deepcopy(net)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.05 * torch.randn_like(p))
    feeds = parity_inputs([5, 7], 1)
    with pytest.raises(ExportParityError, match="parity failed"):
        check_parity(other, tmp_path / "m.onnx", feeds)
    assert check_parity(net, tmp_path / "m.onnx", feeds) <= 1e-5


def test_parity_tolerance_is_enforced(tmp_path: Path) -> None:
    """A tolerance of 0 catches even float rounding noise: the check really compares."""
    net = _net([50, 70], 2)
    export_onnx(net, [50, 70], 2, tmp_path / "m.onnx")
    feeds = parity_inputs([50, 70], 2)
    diff = check_parity(net, tmp_path / "m.onnx", feeds, tol=1.0)
    if diff > 0:
        with pytest.raises(ExportParityError):
            check_parity(net, tmp_path / "m.onnx", feeds, tol=diff / 2)


def test_dynamo_exporter_also_works(tmp_path: Path) -> None:
    net = _net([5, 7], 2, name="lr")
    info = export_onnx(net, [5, 7], 2, tmp_path / "m.onnx", exporter="dynamo")
    assert info["exporter"] == "dynamo" and info["parity_max_abs_diff"] <= 1e-5
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    (p,) = sess.run(None, parity_inputs([5, 7], 2, rows=9))
    assert p.shape == (9,) and np.isfinite(p).all()
