"""Temperature calibration and seed ensembles: logloss never worse, AUC untouched, bundle written."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from scipy.special import expit

from model.ensemble import LogitAverage, TemperatureScaled
from training.config import TrainConfig, default_config
from training.data.synthetic import SyntheticFiles
from training.fitting.calibration import fit_temperature
from training.fitting.metrics import auc_logloss
from training.pipeline import export_checkpoint, load_checkpoint, train_bundle_outcome


def _toy(scale: float, n: int = 4000) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from sigmoid(z); the model reports scale * z (over-confident when scale > 1)."""
    rng = np.random.default_rng(0)
    z = rng.normal(0, 2, n)
    y = (rng.random(n) < expit(z)).astype(np.float64)
    return scale * z, y


@pytest.mark.parametrize("scale", [3.0, 0.4])
def test_temperature_fixes_miscalibration_and_keeps_auc(scale: float) -> None:
    logits, y = _toy(scale)
    t = fit_temperature(logits, y)
    assert t == pytest.approx(scale, rel=0.15)  # the true miscalibration factor
    before, after = auc_logloss(y, expit(logits)), auc_logloss(y, expit(logits / t))
    assert after["logloss"] < before["logloss"] - 0.01
    assert after["auc"] == before["auc"]


def test_temperature_of_a_calibrated_model_is_about_one() -> None:
    logits, y = _toy(1.0)
    t = fit_temperature(logits, y)
    assert t == pytest.approx(1.0, rel=0.1)
    assert auc_logloss(y, expit(logits / t))["logloss"] <= auc_logloss(y, expit(logits))["logloss"] + 1e-12


def test_fit_temperature_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="equal in length"):
        fit_temperature(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="NaN or inf"):
        fit_temperature(np.array([0.0, np.nan]), np.array([0.0, 1.0]))


def test_config_checks_and_frappe_defaults() -> None:
    with pytest.raises(ValueError, match="ensemble"):
        TrainConfig(ensemble=0)
    cfg = default_config("frappe")
    assert cfg.calibrate and cfg.ensemble >= 1
    assert not default_config("csv").calibrate and default_config("csv").ensemble == 1


def test_ensemble_of_two_writes_a_calibrated_bundle(
    synthetic_csv: SyntheticFiles, tiny_cfg: Callable[..., TrainConfig], registry: Path, tmp_path: Path
) -> None:
    cfg = tiny_cfg(epochs=2, ensemble=2, calibrate=True, lr=1e-2)
    out = train_bundle_outcome(
        synthetic_csv.data,
        fmt="csv",
        schema=synthetic_csv.schema,
        valid_fraction=0.2,
        split_seed=1,
        config=cfg,
        registry=registry,
        checkpoint=tmp_path / "ck.pt",
    )
    assert out.bundle_dir is not None
    metrics = json.loads((out.bundle_dir / "metrics.json").read_text())
    assert [m["seed"] for m in metrics["members"]] == [cfg.seed, cfg.seed + 1]
    assert metrics["members"][0]["auc"] != metrics["members"][1]["auc"]
    t = metrics["temperature"]
    assert t > 0 and t != 1.0
    assert metrics["valid"]["auc"] == pytest.approx(metrics["valid_uncalibrated"]["auc"], abs=1e-12)
    assert metrics["valid"]["logloss"] <= metrics["valid_uncalibrated"]["logloss"] + 1e-12
    assert metrics["export"]["parity_max_abs_diff"] <= 1e-5
    assert {h["member"] for h in metrics["history"]} == {0, 1}
    net = out.fit.net
    assert isinstance(net, TemperatureScaled) and isinstance(net.net, LogitAverage)
    assert float(net.temperature) == pytest.approx(t)
    # the served graph reproduces the reported (calibrated) valid numbers on the valid rows
    sess = ort.InferenceSession(str(out.bundle_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    assert len(sess.get_inputs()) >= 1
    # checkpoint round trip rebuilds the same wrapped structure
    again, _, space, _ = load_checkpoint(tmp_path / "ck.pt")
    cat = torch.zeros(4, len(space.categorical), dtype=torch.long)
    num = torch.zeros(4, len(space.numeric))
    with torch.no_grad():
        torch.testing.assert_close(again(cat, num), net(cat, num))
    assert export_checkpoint(tmp_path / "ck.pt", registry).exists()


def test_cli_ensemble_and_calibrate_flags(synthetic_csv: SyntheticFiles, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from training.cli import app

    reg = tmp_path / "reg"
    common = ["train", str(synthetic_csv.data), "--schema", str(synthetic_csv.schema), "--epochs", "1"]
    common += ["--registry", str(reg), "--no-progress", "--set", "embedding_dim=4", "--set", "num_layers=1"]
    runner = CliRunner()
    res = runner.invoke(app, [*common, "--ensemble", "2", "--no-calibrate"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, [*common, "--calibrate"])
    assert res.exit_code == 0, res.output
    runs = [json.loads(p.read_text()) for p in reg.glob("*/metrics.json")]
    by_k = {m["config"]["ensemble"]: m for m in runs}
    assert by_k[2]["temperature"] is None and by_k[2]["config"]["calibrate"] is False
    assert len(by_k[2]["members"]) == 2
    assert by_k[1]["temperature"] is not None and len(by_k[1]["members"]) == 1
