"""The images' locked dependency sets: in sync with pyproject.toml, hash-pinned, torch-free serving."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LOCKS = ROOT / "deploy" / "locks"
REGENERATE = "bash deploy/locks/compile.sh"
sys.path.insert(0, str(LOCKS))
from deps_digest import deps_digest  # noqa: E402

NAMES = ["serve-cpu", "serve-gpu", "trainer-cpu", "trainer-gpu"]


def pins(name: str) -> dict[str, str]:
    text = (LOCKS / f"{name}.txt").read_text()
    return {
        m[0].lower(): m[1] for m in re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", text, re.MULTILINE)
    }


@pytest.mark.parametrize("name", NAMES)
def test_lock_matches_pyproject(name: str) -> None:
    head = (LOCKS / f"{name}.txt").read_text().splitlines()[:3]
    recorded = next(
        (ln.split(":", 1)[1].strip() for ln in head if ln.startswith("# pyproject-deps-sha256:")), None
    )
    assert recorded == deps_digest(), (
        f"deploy/locks/{name}.txt is out of date with pyproject.toml's dependencies; regenerate all locks "
        f"with:\n    {REGENERATE}\n(needs uv from the dev extra and PyPI)"
    )


@pytest.mark.parametrize("name", NAMES)
def test_every_pin_carries_hashes(name: str) -> None:
    text = (LOCKS / f"{name}.txt").read_text()
    blocks = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 2)[2])
    unhashed = [b.split()[0] for b in blocks if "==" in b.split()[0] and "--hash=sha256:" not in b]
    assert not unhashed, f"pins without hashes in {name}: {unhashed}"


def test_serving_locks_carry_no_training_library() -> None:
    for name in ("serve-cpu", "serve-gpu"):
        locked = pins(name)
        assert {"fastapi", "uvicorn", "redis"} <= set(locked), name
        assert not {"torch", "scikit-learn", "matplotlib", "pyarrow"} & set(locked), name
    assert "onnxruntime" in pins("serve-cpu") and "onnxruntime-gpu" in pins("serve-gpu")
    assert pins("trainer-cpu")["torch"].endswith("+cpu")
