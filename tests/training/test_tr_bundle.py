"""Bundles: complete layout, atomic creation (a crash leaves nothing visible), CURRENT, re-export."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

import training.bundle.writer as bw
from service.contract import VERSION_PATTERN, list_versions, load_schema, load_vocab, read_current
from training.bundle.evaluate import evaluate_bundle
from training.config import TrainConfig
from training.data.synthetic import SyntheticFiles
from training.pipeline import export_checkpoint, train_bundle, train_bundle_outcome


def _train(syn: SyntheticFiles, registry: Path, cfg: TrainConfig, **kw: object) -> Path:
    return train_bundle(syn.data, fmt="csv", schema=syn.schema, registry=registry, config=cfg, **kw)


def test_bundle_layout_and_contents(
    synthetic_csv: SyntheticFiles, registry: Path, tiny_cfg: Callable[..., TrainConfig], tmp_path: Path
) -> None:
    out = train_bundle_outcome(
        synthetic_csv.data,
        fmt="csv",
        schema=synthetic_csv.schema,
        registry=registry,
        config=tiny_cfg(epochs=1),
        test_fraction=0.1,
        set_current=True,
        checkpoint=tmp_path / "ck.pt",
    )
    bundle = out.bundle_dir
    assert bundle is not None and bundle.parent == registry and VERSION_PATTERN.match(bundle.name)
    assert list_versions(registry) == [bundle.name] and read_current(registry) == bundle.name
    assert {p.name for p in bundle.iterdir()} == {
        "model.onnx",
        "schema.json",
        "vocab",
        "metrics.json",
        "report.png",
        "checkpoint.pt",  # every bundle carries its weights (warm start, re-export)
        "reliability.png",
    }
    schema = load_schema(bundle)
    assert schema.version == bundle.name and schema.model_name == "dlf"
    assert [f.name for f in schema.categorical] == ["user", "item", "device", "hour"]
    assert [(f.name, f.transform) for f in schema.numeric] == [("price", "log1p"), ("age", "identity")]
    vocab = load_vocab(bundle, schema.categorical[2])
    assert "mobile" in vocab and vocab["mobile"] >= 1 and len(vocab) + 1 == schema.categorical[2].vocab_size
    metrics = json.loads((bundle / "metrics.json").read_text())
    for split in ("valid", "test"):
        assert 0.5 < metrics[split]["auc"] <= 1 and metrics[split]["logloss"] > 0
    assert len(metrics["data_fingerprint"]) == 64 and metrics["git_commit"]
    assert metrics["config"]["model"] == "dlf" and metrics["epochs"] == 1 and metrics["seconds_per_epoch"] > 0
    assert metrics["export"]["parity_max_abs_diff"] <= 1e-5
    calibration = metrics["calibration"]  # reliability table of the exported model on valid
    assert 0 <= calibration["ece"] < 0.5 and calibration["rows"] == metrics["valid"]["rows"]
    assert sum(b["rows"] for b in calibration["bins"]) == calibration["rows"]
    with Image.open(bundle / "report.png") as im:
        assert im.size[0] > 100
    # the ONNX graph reproduces the valid metrics when scoring the same rows through onnxruntime
    sess = ort.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["cat_ids", "numerics"]
    # evaluate command path: whole file through the bundle (train + valid + test rows)
    result = evaluate_bundle(bundle, synthetic_csv.data, fmt="csv")
    assert result["rows"] == synthetic_csv.rows and 0.5 < result["auc"] <= 1
    # re-export from the checkpoint gives a new version with identical predictions
    again = export_checkpoint(tmp_path / "ck.pt", registry)
    assert again != bundle and list_versions(registry) == sorted([bundle.name, again.name])
    again_result = evaluate_bundle(again, synthetic_csv.data, fmt="csv")
    assert again_result["auc"] == pytest.approx(result["auc"], abs=1e-9)


def test_crash_midway_leaves_no_visible_version(
    synthetic_csv: SyntheticFiles,
    registry: Path,
    tiny_cfg: Callable[..., TrainConfig],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk full while writing report.png")

    monkeypatch.setattr(bw, "plot_report", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        _train(synthetic_csv, registry, tiny_cfg(epochs=1, model="fm"), set_current=True)
    assert list_versions(registry) == []
    assert [p.name for p in registry.iterdir() if not p.name.startswith(".")] == []
    assert read_current(registry) is None


def test_parity_failure_aborts_the_bundle(
    synthetic_csv: SyntheticFiles,
    registry: Path,
    tiny_cfg: Callable[..., TrainConfig],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import training.bundle.export as ex

    real = ex.torch_probabilities
    monkeypatch.setattr(ex, "torch_probabilities", lambda net, feeds: real(net, feeds) + 1e-3)
    with pytest.raises(ex.ExportParityError):
        _train(synthetic_csv, registry, tiny_cfg(epochs=1, model="lr"))
    assert list_versions(registry) == [] and not any(not p.name.startswith(".") for p in registry.iterdir())


def test_versions_sort_by_time() -> None:
    from datetime import UTC, datetime, timedelta

    t = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    a, b = bw.new_version(now=t), bw.new_version(now=t + timedelta(microseconds=1))
    assert a.startswith("20260102T030405678901Z-") and VERSION_PATTERN.match(a)
    assert sorted([b, a]) == [a, b]
    assert bw.new_version(now=t) != a  # same instant, different hash


def test_git_commit_outside_a_repo(tmp_path: Path) -> None:
    assert bw.git_commit(tmp_path) == "unknown"


def test_existing_version_is_never_overwritten(registry: Path) -> None:
    registry.mkdir()
    (registry / "20260102T030405678901Z-deadbeef").mkdir()
    with pytest.raises(FileExistsError):
        bw.write_bundle(
            registry,
            model_name="lr",
            space=None,  # type: ignore[arg-type]
            write_onnx=lambda p: {},
            metrics={},
            history=[],
            version="20260102T030405678901Z-deadbeef",
        )
    assert np.array_equal(sorted(p.name for p in registry.iterdir()), ["20260102T030405678901Z-deadbeef"])
