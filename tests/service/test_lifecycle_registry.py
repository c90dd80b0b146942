"""Registry bookkeeping: pointer history, previous version, pruning that never touches CURRENT/previous."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.contract import (
    list_versions,
    pointer_history,
    previous_version,
    prune_versions,
    read_current,
    set_current,
)
from service.testing import write_tiny_bundle

VERSIONS = [f"2025010{d}T000000Z-{c * 8}" for d, c in zip(range(1, 7), "abcdef", strict=True)]


@pytest.fixture
def registry(tmp_path: Path) -> Path:
    for i, v in enumerate(VERSIONS):
        write_tiny_bundle(tmp_path, version=v, seed=i, make_current=False)
    return tmp_path


def test_set_current_records_moves(registry: Path) -> None:
    assert set_current(registry, VERSIONS[0], "first") is None
    assert set_current(registry, VERSIONS[2], "promote") == VERSIONS[0]
    assert read_current(registry) == VERSIONS[2]
    hist = pointer_history(registry)
    assert [(h["version"], h["previous"], h["reason"]) for h in hist] == [
        (VERSIONS[0], None, "first"),
        (VERSIONS[2], VERSIONS[0], "promote"),
    ]
    assert previous_version(registry) == VERSIONS[0]
    with pytest.raises(FileNotFoundError):
        set_current(registry, "20990101T000000Z-00000000")
    assert read_current(registry) == VERSIONS[2]


def test_previous_without_history_is_the_next_older_bundle(registry: Path) -> None:
    (registry / "CURRENT").write_text(VERSIONS[3] + "\n")
    assert previous_version(registry) == VERSIONS[2]
    assert previous_version(registry, VERSIONS[0]) is None


def test_prune_keeps_current_and_previous(registry: Path) -> None:
    set_current(registry, VERSIONS[0])
    set_current(registry, VERSIONS[1])  # previous = 0, current = 1: the two oldest
    removed = prune_versions(registry, keep=3)
    assert removed == VERSIONS[2:5]
    assert list_versions(registry) == [VERSIONS[0], VERSIONS[1], VERSIONS[5]]
    assert not [p for p in registry.iterdir() if p.name.startswith(".deleting")]
    assert prune_versions(registry, keep=1) == [VERSIONS[5]]  # never below CURRENT + previous
    assert list_versions(registry) == VERSIONS[:2]
    with pytest.raises(ValueError, match="keep"):
        prune_versions(registry, keep=0)
