"""bench/pareto.py: the Pareto front and side-by-side ORT timing on real exported graphs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.pareto import pareto_front, plot, rows_per_second


def test_pareto_front_keeps_only_undominated_points(tmp_path: Path) -> None:
    pts = [
        {"name": "ensemble", "rows_per_s": 1000.0, "valid_auc": 0.961},
        {"name": "student", "rows_per_s": 4000.0, "valid_auc": 0.958},
        {"name": "int8", "rows_per_s": 4500.0, "valid_auc": 0.957},
        {"name": "worse", "rows_per_s": 3000.0, "valid_auc": 0.950},  # student beats it on both
    ]
    assert pareto_front(pts) == {"ensemble", "student", "int8"}
    plot(pts, pareto_front(pts), tmp_path / "p.png", "test")
    assert (tmp_path / "p.png").stat().st_size > 1000


def test_rows_per_second_times_each_graph(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from model import build_model, network_config
    from training.bundle.export import export_onnx

    cards = [5, 7, 3]
    paths = {}
    for name, layers in (("one", 1), ("three", 3)):
        cfg = network_config("dlf", "small", {"embedding_dim": 8, "num_layers": layers, "block_hidden": 16})
        torch.manual_seed(0)
        paths[name] = export_onnx(
            build_model("dlf", cards, 0, cfg), cards, 0, tmp_path / f"{name}.onnx"
        ) and (tmp_path / f"{name}.onnx")
    cat = np.stack([np.arange(300) % c for c in cards], axis=1).astype(np.int64)
    speed = rows_per_second(paths, cat, seconds=0.2, rounds=1)
    assert set(speed) == {"one", "three"} and all(v > 0 for v in speed.values())
    with pytest.raises(ValueError, match="at least 100 rows"):
        rows_per_second(paths, cat[:50], seconds=0.1, rounds=1)
