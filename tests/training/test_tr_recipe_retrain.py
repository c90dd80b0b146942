"""One training path: a recipe (YAML) trains a distilled, calibrated bundle; retrain reproduces it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from model.ensemble import TemperatureScaled
from service.contract import read_current
from training.bundle.checkpoint import load_checkpoint
from training.cli import app
from training.data.synthetic import SyntheticFiles, generate
from training.lifecycle.retrain import retrain
from training.recipes import load_recipe

TINY_MODEL = {
    "embedding_dim": 8,
    "num_layers": 1,
    "num_tokens": 4,
    "rank": 4,
    "block_hidden": 32,
    "head_hidden": 32,
}
runner = CliRunner()


def write_recipe(path: Path, **train: object) -> Path:
    body = {
        "name": "tiny-distilled",
        "version": 3,
        "description": "test recipe: 2 cross-fitted teachers -> 1 student, temperature",
        "train": {
            "model": "dlf",
            "model_overrides": dict(TINY_MODEL),
            "epochs": 1,
            "batch_size": 256,
            "lr": 5e-3,
            "patience": 0,
            "ensemble": 2,
            "calibrate": True,
            "distill": {"alpha": 0.5, "temperature": 2.0, "cross_fit": True},
            **train,
        },
    }
    path.write_text(yaml.safe_dump(body))
    return path


def test_recipe_is_validated_with_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"name": "x", "version": 1, "train": {"ensemble": 0}}))
    with pytest.raises(ValueError, match="ensemble"):
        load_recipe(bad)
    with pytest.raises(FileNotFoundError, match="built-in recipes"):
        load_recipe("no-such-recipe")
    cross = tmp_path / "cross.yaml"
    cross.write_text(yaml.safe_dump({"name": "x", "version": 1, "train": {"distill": {"cross_fit": True}}}))
    with pytest.raises(ValueError, match="cross_fit needs ensemble"):
        load_recipe(cross)


def test_retrain_reproduces_the_recipe_of_current(tmp_path: Path) -> None:
    first = generate(tmp_path / "d1", rows=2500, seed=1, fmt="csv")
    recipe = write_recipe(tmp_path / "tiny.yaml")
    reg = tmp_path / "reg"
    res = runner.invoke(
        app,
        ["train", str(first.data), "--schema", str(first.schema), "--recipe", str(recipe),
         "--registry", str(reg), "--set-current", "--no-progress"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    current = reg / str(read_current(reg))
    cur = json.loads((current / "metrics.json").read_text())
    assert cur["recipe"]["name"] == "tiny-distilled" and cur["recipe"]["version"] == 3
    assert cur["structure"] == {
        "members": 1, "teacher_members": 2, "distilled": True, "calibrated": True, "precision": "fp32"
    }  # fmt: skip
    assert len(cur["teacher"]["members"]) == 2 and cur["teacher"]["cross_fit"] is True
    assert cur["temperature"] > 0 and len(cur["members"]) == 1

    second = generate(tmp_path / "d2", rows=2500, seed=2, fmt="csv")
    out = retrain(second.data, registry=reg, schema=second.schema, tolerance=1.0)
    cand = json.loads((out.candidate / "metrics.json").read_text())
    assert cand["structure"] == cur["structure"]
    assert cand["config"] == cur["config"]
    assert len(cand["teacher"]["members"]) == 2 and cand["temperature"] > 0
    record = json.loads((out.candidate / "promotion.json").read_text())
    assert record["current_recipe"]["name"] == "tiny-distilled" and record["current_recipe"]["version"] == 3
    assert record["candidate_recipe"]["name"] == "tiny-distilled"
    assert record["candidate_recipe"]["structure"] == record["current_recipe"]["structure"]
    assert "reproduces CURRENT" in record["config_source"]
    # the exported structures match too: one calibrated student network on both sides
    for bundle in (current, out.candidate):
        net, cfg, space, _ = load_checkpoint(bundle / "checkpoint.pt")
        assert isinstance(net, TemperatureScaled) and not hasattr(net.net, "members")
        assert cfg.distill is not None and cfg.ensemble == 2

    # told otherwise: an override changes the candidate's recipe and the record says so
    out2 = retrain(second.data, registry=reg, schema=second.schema, tolerance=1.0, overrides={"ensemble": 3})
    record2 = json.loads((out2.candidate / "promotion.json").read_text())
    assert record2["candidate_recipe"]["structure"]["teacher_members"] == 3
    assert record2["candidate_recipe"]["overrides"] == {"ensemble": 3}
    assert "overrides" in record2["config_source"]


def test_distillation_uses_out_of_fold_teacher_targets(synthetic_csv: SyntheticFiles, tmp_path: Path) -> None:
    """Cross-fitted targets score train rows the members never saw: less in-sample fit than in-sample ones."""
    from training.data.dataset import prepare_data
    from training.data.spec import resolve_spec
    from training.pipeline import train_on

    data = prepare_data(synthetic_csv.data, resolve_spec("csv", synthetic_csv.schema, None), split_seed=1)
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", epochs=3, lr=1e-2, patience=3))
    cfg = recipe.train
    _, oof = train_on(data, cfg, recipe=recipe)
    cfg_in = cfg.replace(distill={**cfg.distill.model_dump(), "cross_fit": False})  # type: ignore[union-attr]
    _, insample = train_on(data, cfg_in)
    assert oof["teacher"]["train_auc_of_targets"] < insample["teacher"]["train_auc_of_targets"]
    assert oof["recipe"]["name"] == "tiny-distilled" and "overrides" not in oof["recipe"]
    assert insample["recipe"]["name"] == "csv-adhoc"
    assert np.isfinite(oof["valid"]["auc"]) and oof["teacher"]["valid"]["auc"] > 0.5
    assert torch.get_num_threads() >= 1
