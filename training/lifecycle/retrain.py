"""The retraining job: train a candidate on new data, gate it against the served model, promote or refuse.

``retrain(...)`` (and ``python -m training.cli retrain``):

1. prepare the new data (split, vocab, statistics); with ``warm_start`` and a
   current bundle that has ``checkpoint.pt``, extend the current vocabulary
   instead (old ids kept, new values appended) and start from its weights
   (``training.lifecycle.warm_start``);
2. train and write the candidate bundle (plus ``checkpoint.pt`` for the next
   warm start); it is *not* CURRENT yet;
3. score candidate and current through onnxruntime on the same rows
   (``--eval-data`` or the candidate's validation split);
4. promote only if the field signatures match and candidate AUC >= current
   AUC - tolerance; write ``promotion.json`` next to the candidate either way.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from service.contract import load_schema, resolve_current
from training.bundle.evaluate import space_from_bundle
from training.bundle.export import export_onnx
from training.bundle.writer import git_commit, write_bundle
from training.config import TrainConfig, default_config
from training.data.dataset import PreparedData, Split, encode_file, prepare_data
from training.data.readers import iter_batches
from training.data.spec import DatasetSpec, resolve_spec
from training.fitting.device import DistInfo, select_device
from training.fitting.reliability import net_calibration
from training.fitting.trainer import fit
from training.lifecycle.promotion import Decision, compare_bundles, decide, now, promote, write_record
from training.lifecycle.warm_start import checkpoint_path, merge_space, signature, transfer_weights
from training.pipeline import build_net, load_checkpoint, save_checkpoint

log = logging.getLogger("training")


@dataclass
class RetrainOutcome:
    candidate: Path
    promoted: bool
    record: dict[str, Any]


def _reencode(prepared: PreparedData, data_path: Path, spec: DatasetSpec, space: Any) -> PreparedData:
    """Encode the same rows again with ``space`` (the merged warm-start vocabulary); splits unchanged."""
    if prepared.info.get("split") != "fraction":
        raise ValueError("retrain supports a single data file split by fraction")
    full = encode_file(data_path, spec, space, n_rows=len(prepared.train.arrays))
    test = Split(full, prepared.test.rows) if prepared.test is not None else None
    return dataclasses.replace(
        prepared,
        space=space,
        train=Split(full, prepared.train.rows),
        valid=Split(full, prepared.valid.rows),
        test=test,
    )


def _split_batches(path: Path, spec: DatasetSpec, rows: np.ndarray, n: int) -> Iterator[pa.RecordBatch]:
    """Stream only the given rows of a file (the validation split as an evaluation set)."""
    mask = np.zeros(n, dtype=bool)
    mask[rows] = True
    at = 0
    for batch in iter_batches(path, spec):
        keep = mask[at : at + batch.num_rows]
        at += batch.num_rows
        if keep.any():
            yield batch.filter(pa.array(keep))


def retrain(
    data_path: str | Path,
    *,
    registry: str | Path,
    fmt: str = "csv",
    schema: str | Path | None = None,
    eval_data: str | Path | None = None,
    warm_start: bool = False,
    tolerance: float = 0.001,
    redis_url: str | None = None,
    prefix: str = "dlf:",
    channel: str | None = None,
    keep: int = 10,
    config: TrainConfig | None = None,
    valid_fraction: float = 0.1,
    split_seed: int = 2024,
    min_count: int | None = None,
    force_cpu: bool = False,
    progress: bool = False,
) -> RetrainOutcome:
    """Train a candidate, compare it with CURRENT on one evaluation set, promote it only if it passes."""
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    data_path, registry = Path(data_path), Path(registry)
    started = now()
    current_version = resolve_current(registry)
    current_dir = registry / current_version if current_version else None
    spec = resolve_spec(fmt, schema, min_count)
    cfg = config or default_config(fmt)
    prepared = prepare_data(
        data_path, spec, valid_fraction=valid_fraction, split_seed=split_seed, progress=progress
    )
    warm: dict[str, Any] = {"requested": warm_start, "used": False}
    old: tuple[Any, Any] | None = None
    if warm_start and current_dir is None:
        warm["reason"] = "no current bundle"
    elif warm_start and current_dir is not None and not checkpoint_path(current_dir).exists():
        warm["reason"] = (
            f"{current_version} has no {checkpoint_path(current_dir).name} (not written by retrain)"
        )
    elif warm_start and current_dir is not None:
        old_net, old_cfg, _, _ = load_checkpoint(checkpoint_path(current_dir))
        old_space = space_from_bundle(current_dir)
        prepared = _reencode(prepared, data_path, spec, merge_space(old_space, prepared.space))
        # the architecture must be the old one for its weights to fit; optimisation settings stay ours
        cfg = dataclasses.replace(
            cfg,
            model=old_cfg.model,
            preset=old_cfg.preset,
            model_overrides=old_cfg.model_overrides,
            dropout=old_cfg.dropout,
        )
        old = (old_net, old_space)
    if warm_start and old is None:
        log.warning("warm start not possible (%s); training from scratch", warm["reason"])

    choice = select_device(force_cpu=force_cpu, amp=cfg.amp)
    net = build_net(cfg, prepared.space)
    if old is not None:
        warm |= {
            "used": True,
            "from": current_version,
            **transfer_weights(old[0], old[1], net, prepared.space),
        }
    t0 = time.perf_counter()
    result = fit(net, prepared.train, prepared.valid, cfg, choice, DistInfo(), progress=progress)
    metrics = {
        "model": cfg.model,
        "preset": cfg.preset,
        "valid": {k: result.best[k] for k in ("auc", "logloss")} | {"rows": len(prepared.valid)},
        "calibration": net_calibration(result.net, prepared.valid, cfg.eval_batch_size),
        "test": None,
        "best_epoch": result.best["epoch"],
        "epochs": result.epochs_run,
        "train_wall_seconds": time.perf_counter() - t0,
        "device": result.device,
        "config": cfg.to_dict(),
        "data_fingerprint": prepared.fingerprint,
        "data": prepared.info,
        "git_commit": git_commit(),
        "created_at": now(),
        "warm_start": warm,
    }
    space = prepared.space

    def write_onnx(path: Path) -> dict[str, Any]:
        info = export_onnx(result.net, space.cardinalities, len(space.numeric), path)
        save_checkpoint(path.parent / checkpoint_path(path.parent).name, result.net, cfg, space, metrics)
        return info

    candidate = write_bundle(
        registry,
        model_name=cfg.model,
        space=space,
        write_onnx=write_onnx,
        metrics=metrics,
        history=result.history,
        extra={"preset": cfg.preset, "valid_auc": metrics["valid"]["auc"], "retrained": True},
    )

    batches: Callable[[], Any]
    if eval_data is not None:
        eval_source = str(eval_data)
        batches = lambda: iter_batches(eval_data, spec)  # noqa: E731
    else:
        eval_source = f"validation split of {data_path} ({len(prepared.valid)} rows)"
        n = len(prepared.valid.arrays)
        batches = lambda: _split_batches(data_path, spec, prepared.valid.rows, n)  # noqa: E731
    scores = compare_bundles(candidate, current_dir, batches)
    cand_sig = load_schema(candidate).signature()
    cur_sig = load_schema(current_dir).signature() if current_dir else cand_sig
    if cand_sig != cur_sig:
        decision = Decision(False, f"schema-incompatible with {current_version}: {cand_sig} != {cur_sig}")
    else:
        current_auc = scores["current"]["auc"] if "current" in scores else None
        decision = decide(scores["candidate"]["auc"], current_auc, tolerance)
    record: dict[str, Any] = {
        "candidate_version": candidate.name,
        "current_version": current_version,
        "candidate_auc": scores["candidate"]["auc"],
        "current_auc": scores.get("current", {}).get("auc"),
        "candidate_logloss": scores["candidate"]["logloss"],
        "current_logloss": scores.get("current", {}).get("logloss"),
        "candidate_ece": scores["candidate"]["ece"],
        "current_ece": scores.get("current", {}).get("ece"),
        "eval_rows": scores["candidate"]["rows"],
        "eval_source": eval_source,
        "tolerance": tolerance,
        "decision": "promoted" if decision.promote else "refused",
        "reason": decision.reason,
        "warm_start": warm,
        "started_at": started,
        "decided_at": now(),
        "signature_matches": cand_sig == cur_sig,
        "fields": [list(s) for s in signature(space)],
    }
    write_record(candidate, record)
    if decision.promote:
        record |= promote(registry, candidate, redis_url=redis_url, prefix=prefix, channel=channel, keep=keep)
        write_record(candidate, record)
    log.info("retrain %s: %s (%s)", candidate.name, record["decision"], record["reason"])
    return RetrainOutcome(candidate, decision.promote, record)
