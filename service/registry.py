"""Registry bookkeeping on top of ``service.bundle``: pointer history, previous version, pruning.

``<registry>/CURRENT`` says what is served; ``<registry>/HISTORY.jsonl`` is an
append-only log of pointer moves (one JSON object per line: version, previous,
reason, at) so "the previous version" survives restarts and is the same for
every replica and for the retraining job. Numpy-free and torch-free: training
imports it to promote, serving imports it to roll back.
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from service.bundle import atomic_write_text, list_versions, read_current, write_current

HISTORY_FILE = "HISTORY.jsonl"
MAX_HISTORY_LINES = 1000


def pointer_history(registry: str | Path) -> list[dict[str, Any]]:
    """Pointer moves, oldest first ([] when none were recorded); unreadable lines are skipped."""
    path = Path(registry) / HISTORY_FILE
    if not path.exists():
        return []
    out: list[dict[str, Any]] = []
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict) and isinstance(entry.get("version"), str):
            out.append(entry)
    return out


def set_current(registry: str | Path, version: str, reason: str = "") -> str | None:
    """Move CURRENT to ``version`` (atomic) and record the move; returns the version it pointed at before."""
    registry = Path(registry)
    before = read_current(registry)
    write_current(registry, version)
    entry = {"version": version, "previous": before, "reason": reason, "at": datetime.now(UTC).isoformat()}
    lines = [json.dumps(e) for e in pointer_history(registry)[-(MAX_HISTORY_LINES - 1) :]]
    atomic_write_text(registry / HISTORY_FILE, "\n".join([*lines, json.dumps(entry)]) + "\n")
    return before


def previous_version(registry: str | Path, current: str | None = None) -> str | None:
    """The version served before ``current`` (default: CURRENT) that still exists on disk.

    Walks the pointer history backwards; without history, falls back to the
    newest complete bundle older than ``current``.
    """
    registry = Path(registry)
    current = current if current is not None else read_current(registry)
    existing = set(list_versions(registry))
    for entry in reversed(pointer_history(registry)):
        for candidate in (entry.get("version"), entry.get("previous")):
            if candidate and candidate != current and candidate in existing:
                return candidate
    older = [v for v in sorted(existing) if current is None or v < current]
    return older[-1] if older else None


def prune_versions(registry: str | Path, keep: int) -> list[str]:
    """Delete the oldest bundles beyond ``keep``; never CURRENT nor the previous version. Returns removed."""
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    registry = Path(registry)
    current = read_current(registry)
    protected = {v for v in (current, previous_version(registry, current)) if v}
    versions = list_versions(registry)
    removable = [v for v in versions if v not in protected]
    excess = len(versions) - keep
    removed: list[str] = []
    for version in removable:
        if excess <= 0:
            break
        target = registry / version
        # rename first so a half-deleted directory never looks like a complete bundle
        trash = registry / f".deleting-{version}"
        target.rename(trash)
        shutil.rmtree(trash, ignore_errors=True)
        removed.append(version)
        excess -= 1
    return removed
