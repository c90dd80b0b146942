"""Training: readers -> vocabulary -> trainer -> ONNX export -> bundle.

``train_bundle(data_path, **options) -> Path`` is the one-call entry point (see
``training.pipeline``); the CLI is ``python -m training.cli``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["train_bundle"]


def train_bundle(data_path: Any, **kwargs: Any) -> Path:
    """Lazy wrapper of ``training.pipeline.train_bundle`` (keeps ``import training`` light)."""
    from training.pipeline import train_bundle as _tb

    return _tb(data_path, **kwargs)
