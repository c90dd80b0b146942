"""LogitAverage / TemperatureScaled: exact maths, and both export to ONNX with parity."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from model import build_model, preset
from model.ensemble import LogitAverage, TemperatureScaled
from training.bundle.export import export_onnx, parity_inputs

TINY = dict(embedding_dim=8, num_layers=1, num_tokens=4, rank=4, block_hidden=16, head_hidden=16)
CARDS = [5, 7, 3]


def _members(n: int) -> list[torch.nn.Module]:
    cfg = dataclasses.replace(preset("small"), **TINY)
    return [build_model("dlf", CARDS, 2, cfg, seed=s).eval() for s in range(n)]


def _inputs(rows: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    feeds = parity_inputs(CARDS, 2, rows=rows, seed=5)
    return torch.from_numpy(feeds["cat_ids"]), torch.from_numpy(feeds["numerics"])


def test_logit_average_is_the_mean_of_member_logits() -> None:
    members = _members(3)
    cat, num = _inputs()
    with torch.no_grad():
        expected = sum(m(cat, num) for m in members) / 3
        got = LogitAverage(members).eval()(cat, num)
        single = members[0](cat, num)
    assert got.shape == (64,)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
    assert not torch.allclose(got, single)  # the members really differ (different seeds)
    with pytest.raises(ValueError, match="at least one member"):
        LogitAverage([])


def test_temperature_divides_logits_and_rejects_bad_values() -> None:
    (m,) = _members(1)
    cat, num = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(TemperatureScaled(m, 2.5)(cat, num), m(cat, num) / 2.5)
    assert "temperature" in TemperatureScaled(m, 2.0).state_dict()
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="temperature must be > 0"):
            TemperatureScaled(m, bad)


def test_calibrated_ensemble_exports_with_parity(tmp_path: Path) -> None:
    members = _members(2)
    plain = LogitAverage(members).eval()
    info = export_onnx(plain, CARDS, 2, tmp_path / "plain.onnx")
    assert info["parity_max_abs_diff"] <= 1e-5
    scaled = TemperatureScaled(plain, 3.0).eval()
    info = export_onnx(scaled, CARDS, 2, tmp_path / "scaled.onnx")
    assert info["parity_max_abs_diff"] <= 1e-5
    feeds = parity_inputs(CARDS, 2, rows=50, seed=9)
    p_plain = ort.InferenceSession(str(tmp_path / "plain.onnx")).run(["probability"], feeds)[0]
    p_scaled = ort.InferenceSession(str(tmp_path / "scaled.onnx")).run(["probability"], feeds)[0]
    logit = np.log(p_plain / (1 - p_plain))
    np.testing.assert_allclose(p_scaled, 1 / (1 + np.exp(-logit / 3.0)), atol=1e-5)
    assert np.max(np.abs(p_scaled - p_plain)) > 1e-3  # T is really in the graph
