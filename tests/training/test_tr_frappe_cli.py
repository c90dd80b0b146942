"""CLI commands end to end, and Frappe (only when ../shared/data/frappe exists; small subsample, 1 epoch)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from service.contract import list_versions, load_schema, read_current
from training.cli import app
from training.data.spec import FRAPPE_FIELDS

REPO = Path(__file__).resolve().parents[2]
FRAPPE = REPO.parent / "shared" / "data" / "frappe" / "frappe.dev.libfm"
TINY_SETS = [
    "--set",
    "embedding_dim=8",
    "--set",
    "num_layers=1",
    "--set",
    "block_hidden=32",
    "--set",
    "head_hidden=32",
]

runner = CliRunner()


def test_cli_generate_train_evaluate(tmp_path: Path) -> None:
    res = runner.invoke(app, ["generate", str(tmp_path / "d"), "--rows", "1500", "--format", "parquet"])
    assert res.exit_code == 0, res.output
    files = json.loads(res.output)
    assert files["data"].endswith("synthetic.parquet")
    reg = tmp_path / "reg"
    res = runner.invoke(
        app,
        [
            "train", files["data"], "--format", "parquet", "--schema", files["schema"], "--epochs", "1",
            "--batch-size", "128", "--registry", str(reg), "--set-current", "--no-progress", *TINY_SETS,
        ],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output[res.output.index("{") :])
    bundle = Path(summary["bundle"])
    assert read_current(reg) == bundle.name and summary["epochs"] == 1
    res = runner.invoke(app, ["evaluate", str(bundle), files["data"], "--format", "parquet"])
    assert res.exit_code == 0, res.output
    ev = json.loads(res.output)
    assert ev["rows"] == 1500 and 0 < ev["auc"] <= 1


def test_cli_bad_input_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text("click,a\n1,x\n")
    (tmp_path / "s.yaml").write_text("label: click\nfields:\n  - {name: b, type: categorical}\n")
    res = runner.invoke(
        app, ["train", str(tmp_path / "d.csv"), "--schema", str(tmp_path / "s.yaml"), "--no-progress"]
    )
    assert res.exit_code == 2
    assert "b" in res.output and "error" in res.output
    res = runner.invoke(app, ["train", str(tmp_path / "d.csv"), "--no-progress"])
    assert res.exit_code == 2 and "needs a schema file" in res.output


@pytest.mark.skipif(not FRAPPE.exists(), reason="../shared/data/frappe is not available")
def test_frappe_end_to_end_small(tmp_path: Path) -> None:
    sample = tmp_path / "frappe.sample.libfm"
    with FRAPPE.open() as fh:
        sample.write_text("".join(next(fh) for _ in range(3000)))
    reg = tmp_path / "reg"
    res = runner.invoke(
        app,
        [
            "train",
            str(sample),
            "--format",
            "frappe",
            "--epochs",
            "1",
            "--batch-size",
            "64",
            "--lr",
            "3e-3",
            "--ema-decay",
            "0",  # one short epoch: the recipe's moving average would still be mostly the initial weights
            "--registry",
            str(reg),
            "--no-progress",
            *TINY_SETS,
        ],
    )
    assert res.exit_code == 0, res.output
    (version,) = list_versions(reg)
    schema = load_schema(reg / version)
    assert [f.name for f in schema.fields] == FRAPPE_FIELDS and not schema.numeric
    metrics = json.loads((reg / version / "metrics.json").read_text())
    assert metrics["data"]["rows"] == {"train": 2700, "valid": 300, "test": 0}
    assert metrics["valid"]["auc"] > 0.6 and metrics["test"] is None
    res = runner.invoke(app, ["evaluate", str(reg / version), str(sample), "--format", "frappe"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["rows"] == 3000


def test_ema_decay_zero_on_the_command_line_turns_the_recipes_average_off() -> None:
    from training.config import apply_overrides, default_config

    recipe = default_config("frappe")
    assert recipe.ema_decay == 0.995  # the Frappe default averages its weights
    assert apply_overrides(recipe, ema_decay=0).ema_decay is None
    assert apply_overrides(recipe, ema_decay=0.9).ema_decay == 0.9
    assert apply_overrides(recipe, ema_decay=None).ema_decay == 0.995
