"""Serving must run from the `serve` install: no torch, scikit-learn, matplotlib or pyarrow."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TRAINING_ONLY = ("torch", "sklearn", "matplotlib", "pyarrow")


def loaded_after_import(module: str, call: str = "") -> set[str]:
    """Top-level packages present in sys.modules after importing ``module`` in a fresh interpreter."""
    code = f"import sys, {module}\n{call}\nprint(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True, timeout=120
    )
    return set(out.stdout.split())


def test_importing_the_app_loads_no_training_library() -> None:
    loaded = loaded_after_import("service.app", "service.app.create_app()")
    assert "fastapi" in loaded and "onnxruntime" in loaded  # the check itself sees real imports
    assert loaded.isdisjoint(TRAINING_ONLY), sorted(loaded & set(TRAINING_ONLY))


def test_service_cli_loads_no_training_library() -> None:
    loaded = loaded_after_import("service.cli")
    assert loaded.isdisjoint(TRAINING_ONLY), sorted(loaded & set(TRAINING_ONLY))
