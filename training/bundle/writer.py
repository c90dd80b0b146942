"""Write a model bundle atomically: build everything in ``<registry>/.tmp-<version>/``, then rename.

A crash at any point leaves at most a hidden ``.tmp-*`` directory, which
``service.contract.list_versions`` never lists; the visible ``<registry>/<version>/``
appears in one ``os.rename``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from service.contract import VERSION_PATTERN, BundleSchema, atomic_write_text, write_current
from training.bundle.report import plot_report
from training.data.vocab import FeatureSpace
from training.fitting.reliability import plot_reliability

TMP_PREFIX = ".tmp-"


def new_version(salt: str = "", now: datetime | None = None) -> str:
    """``YYYYmmddTHHMMSSffffffZ-<hash8>``: sorts by creation time, hash tells same-instant builds apart."""
    now = now or datetime.now(UTC)
    stamp = now.strftime("%Y%m%dT%H%M%S%fZ")
    digest = hashlib.sha256(f"{stamp}|{salt}|{os.getpid()}|{os.urandom(8).hex()}".encode()).hexdigest()[:8]
    version = f"{stamp}-{digest}"
    assert VERSION_PATTERN.match(version), version
    return version


def git_commit(cwd: str | Path | None = None) -> str:
    """``git rev-parse HEAD`` of the code that trained the model, "unknown" outside a repo or before a commit."""
    where = Path(cwd) if cwd is not None else Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    sha = out.stdout.strip()
    return sha if out.returncode == 0 and sha else "unknown"


def write_bundle(
    registry: str | Path,
    *,
    model_name: str,
    space: FeatureSpace,
    write_onnx: Callable[[Path], dict[str, Any]],
    metrics: dict[str, Any],
    history: list[dict[str, float]],
    extra: dict[str, Any] | None = None,
    set_current: bool = False,
    version: str | None = None,
) -> Path:
    """Create ``<registry>/<version>/`` with model.onnx, schema.json, vocab/, metrics.json, report.png.

    ``write_onnx(path)`` exports (and parity-checks) the model into ``path`` and returns export
    facts that go into metrics.json. Returns the final bundle directory.
    """
    registry = Path(registry)
    registry.mkdir(parents=True, exist_ok=True)
    version = version or new_version(salt=json.dumps(metrics, sort_keys=True, default=str))
    if not VERSION_PATTERN.match(version):
        raise ValueError(f"bad bundle version {version!r}")
    final = registry / version
    if final.exists():
        raise FileExistsError(f"bundle {final} already exists")
    tmp = registry / f"{TMP_PREFIX}{version}"
    tmp.mkdir()
    try:
        export_info = write_onnx(tmp / "model.onnx")
        schema = BundleSchema(
            version=version,
            model_name=model_name,
            fields=list(space.fields),
            label=space.label,
            extra=dict(extra or {}),
        )
        (tmp / "schema.json").write_text(schema.to_json())
        space.save_vocabs(tmp)
        full_metrics = {"version": version, **metrics, "export": export_info, "history": history}
        (tmp / "metrics.json").write_text(json.dumps(full_metrics, indent=2, default=str))
        plot_report(history, tmp / "report.png", title=f"{model_name} {version}")
        if metrics.get("calibration"):  # validation reliability table -> reliability.png
            plot_reliability(metrics["calibration"], tmp / "reliability.png", title=f"{model_name} {version}")
        _fsync_tree(tmp)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(registry)
    if set_current:
        write_current(registry, version)
    return final


def set_current(registry: str | Path, version: str) -> None:
    """Point ``<registry>/CURRENT`` at ``version`` (atomic replace)."""
    write_current(registry, version)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    """Flush file contents before the rename makes them visible."""
    for dirpath, _, files in os.walk(root):
        for name in files:
            fd = os.open(Path(dirpath) / name, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))


__all__ = ["atomic_write_text", "git_commit", "new_version", "set_current", "write_bundle"]
