"""Shared fixtures for the training tests: tiny models, tiny synthetic data, one CPU thread."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from training.config import TrainConfig
from training.data.synthetic import SyntheticFiles, generate

torch.set_num_threads(1)

TINY_MODEL = {
    "embedding_dim": 8,
    "num_layers": 1,
    "num_tokens": 4,
    "rank": 4,
    "block_hidden": 32,
    "head_hidden": 32,
    "num_heads": 2,
}


def tiny_config(**kw: object) -> TrainConfig:
    """A DLF small enough to train in a couple of seconds on one thread."""
    base: dict[str, object] = {
        "model": "dlf",
        "preset": "small",
        "model_overrides": dict(TINY_MODEL),
        "epochs": 4,
        "batch_size": 128,
        "lr": 3e-3,
        "patience": 1,
    }
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


@pytest.fixture
def tiny_cfg() -> Callable[..., TrainConfig]:
    """Factory: ``tiny_cfg(epochs=2)`` -> TrainConfig of a tiny DLF."""
    return tiny_config


@pytest.fixture(scope="session")
def synthetic_csv(tmp_path_factory: pytest.TempPathFactory) -> SyntheticFiles:
    return generate(tmp_path_factory.mktemp("syn"), rows=4000, seed=3, fmt="csv")


@pytest.fixture
def registry(tmp_path: Path) -> Path:
    return tmp_path / "registry"
