"""The one training path: prepared data + TrainConfig -> fitted structure -> metrics -> bundle.

``train``, ``retrain``, ``export`` and bench-quality all go through ``train_on`` (fit the
recipe's structure: one net, a seed ensemble, or a cross-fitted teacher ensemble distilled into
one student; then the temperature) and ``build_bundle`` (export, precision variant, checkpoint,
one ``metrics.json`` layout).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.special import expit
from torch import nn

from model import build_model, describe
from model.ensemble import LogitAverage, TemperatureScaled
from training.bundle.checkpoint import CHECKPOINT_FILE, export_checkpoint, load_checkpoint, save_checkpoint
from training.bundle.export import export_onnx
from training.bundle.precision import export_precision
from training.bundle.writer import git_commit, write_bundle
from training.config import DistillConfig, TrainConfig, default_config
from training.data.dataset import PreparedData, prepare_data
from training.data.spec import resolve_spec
from training.data.vocab import FeatureSpace
from training.fitting.calibration import fit_temperature, predict_logits
from training.fitting.device import dist_info_from_env, init_distributed, seed_everything, select_device
from training.fitting.distill import fold_ids, subset
from training.fitting.metrics import auc_logloss
from training.fitting.reliability import reliability_table
from training.fitting.trainer import FitResult, evaluate, fit
from training.recipes import Recipe, adhoc_recipe

log = logging.getLogger("training")

# warm-start hook: (fresh net, member index or None for a student) -> facts recorded in metrics.json
InitFn = Callable[[nn.Module, int | None], dict[str, Any]]

__all__ = [
    "CHECKPOINT_FILE",
    "TrainOutcome",
    "build_bundle",
    "build_net",
    "export_checkpoint",
    "load_checkpoint",
    "member_configs",
    "save_checkpoint",
    "train_bundle",
    "train_bundle_outcome",
    "train_on",
    "wrap_members",
]


@dataclass
class TrainOutcome:
    bundle_dir: Path | None  # None on non-zero torchrun ranks (only rank 0 writes)
    metrics: dict[str, Any]
    fit: FitResult


def build_net(cfg: TrainConfig, space: FeatureSpace) -> nn.Module:
    """Seeded model for the feature space (same seed -> same initial weights)."""
    seed_everything(cfg.seed)
    return build_model(
        cfg.model,
        cat_cardinalities=space.cardinalities,
        num_numeric=len(space.numeric),
        config=cfg.network_config(),
    )


def member_configs(cfg: TrainConfig) -> list[TrainConfig]:
    """One config per ensemble member: seeds seed, seed+1, ... (a single net keeps the fit settings)."""
    single = cfg.replace(ensemble=1, distill=None, calibrate=False)
    return [single.replace(seed=cfg.seed + i) for i in range(cfg.ensemble)]


def wrap_members(members: list[nn.Module], temperature: float | None) -> nn.Module:
    """The exported structure: a single net or LogitAverage, then TemperatureScaled when calibrated."""
    net: nn.Module = members[0] if len(members) == 1 else LogitAverage(members)
    return (TemperatureScaled(net, temperature) if temperature is not None else net).eval()


def _combine(fits: list[FitResult], net: nn.Module, best: dict[str, float], n_train: int) -> FitResult:
    """One FitResult for everything trained: histories tagged with their network, costs summed."""
    seconds = sum(f.seconds_per_epoch * f.epochs_run for f in fits)
    epochs = sum(f.epochs_run for f in fits)
    return FitResult(
        net=net,
        history=[{**h, "member": i} for i, f in enumerate(fits) for h in f.history]
        if len(fits) > 1
        else fits[0].history,
        best=best,
        epochs_run=epochs,
        seconds_per_epoch=seconds / max(epochs, 1e-9),
        samples_per_second=epochs * n_train / max(seconds, 1e-9),
        device=fits[0].device,
        stopped_early=all(f.stopped_early for f in fits),
        extra={**fits[-1].extra, "networks_trained": len(fits)},
    )


def _fit_one(
    cfg: TrainConfig,
    data: PreparedData,
    train_split: Any,
    choice: Any,
    dist: Any,
    *,
    index: int | None,
    init: InitFn | None,
    teacher: np.ndarray | None = None,
    distill: DistillConfig | None = None,
    progress: bool = False,
) -> tuple[FitResult, dict[str, Any] | None]:
    net = build_net(cfg, data.space)
    warm = init(net, index) if init is not None else None
    result = fit(
        net,
        train_split,
        data.valid,
        cfg,
        choice,
        dist,
        teacher_logits=teacher,
        distill=distill,
        progress=progress,
    )
    return result, warm


def _member_row(cfg: TrainConfig, f: FitResult) -> dict[str, Any]:
    return {
        "seed": cfg.seed,
        "best_epoch": f.best["epoch"],
        "auc": f.best["auc"],
        "logloss": f.best["logloss"],
    }


def train_on(
    data: PreparedData,
    cfg: TrainConfig,
    *,
    force_cpu: bool = False,
    progress: bool = False,
    init: InitFn | None = None,
    recipe: Recipe | None = None,
) -> tuple[FitResult, dict[str, Any]]:
    """Fit ``cfg``'s structure on prepared splits; returns the combined fit and the metrics dict.

    * ``ensemble`` K > 1 without ``distill``: K members (seeds seed..seed+K-1), logits averaged;
    * with ``distill``: the K members are the teacher (cross-fitted: member k skips fold k), then one
      student is trained on ``alpha`` * labels + (1 - alpha) * the teacher's (out-of-fold) logits;
    * ``calibrate``: one temperature fitted on the valid logits of the exported net.

    ``metrics["valid"]`` is what the exported model scores; ``valid_uncalibrated`` is before T;
    ``teacher`` holds the teacher ensemble's valid scores when distilled. ``init`` warm-starts the
    exported networks (members, or the student).
    """
    dist = dist_info_from_env()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    choice = select_device(
        force_cpu=force_cpu, amp=cfg.amp, local_rank=dist.local_rank if dist.enabled else None
    )
    init_distributed(dist, choice)
    cpu = select_device(cuda_available=False)
    y = data.valid.labels()
    t0 = time.perf_counter()
    members = member_configs(cfg)
    distill = cfg.distill
    folds = fold_ids(len(data.train), len(members)) if distill is not None and distill.cross_fit else None
    teacher_logits = np.zeros(len(data.train)) if distill is not None else None
    fits: list[FitResult] = []
    warm: list[dict[str, Any]] = []
    for i, mcfg in enumerate(members):
        if len(members) > 1:
            log.info("%s %d/%d (seed %d)", "teacher" if distill else "member", i + 1, len(members), mcfg.seed)
        train_split = data.train if folds is None else subset(data.train, np.flatnonzero(folds != i))
        f, w = _fit_one(
            mcfg, data, train_split, choice, dist, index=i, init=None if distill else init, progress=progress
        )
        fits.append(f)
        if w is not None:
            warm.append(w)
        if teacher_logits is not None:
            if folds is None:  # in-sample teacher: average of the members on every train row
                teacher_logits += predict_logits(f.net, data.train, cpu, cfg.eval_batch_size) / len(members)
            else:
                held = np.flatnonzero(folds == i)
                teacher_logits[held] = predict_logits(
                    f.net, subset(data.train, held), cpu, cfg.eval_batch_size
                )
    member_rows = [_member_row(m, f) for m, f in zip(members, fits, strict=True)]
    teacher_metrics: dict[str, Any] | None = None
    teacher_net: nn.Module | None = None
    if distill is not None:
        teacher_net = wrap_members([f.net for f in fits], None)
        teacher_valid = auc_logloss(
            y, expit(predict_logits(teacher_net, data.valid, cpu, cfg.eval_batch_size))
        )
        teacher_metrics = {
            "members": member_rows,
            "valid": teacher_valid,
            "cross_fit": distill.cross_fit,
            "train_auc_of_targets": auc_logloss(data.train.labels(), expit(teacher_logits))["auc"],
        }
        log.info("teacher valid AUC %.4f; training the student", teacher_valid["auc"])
        scfg = cfg.student_config()
        f, w = _fit_one(
            scfg,
            data,
            data.train,
            choice,
            dist,
            index=None,
            init=init,
            teacher=teacher_logits,
            progress=progress,
        )
        fits.append(f)
        if w is not None:
            warm.append(w)
        exported = [f.net]
        exported_rows = [_member_row(scfg, f)]
    else:
        exported = [f.net for f in fits]
        exported_rows = member_rows
    wall = time.perf_counter() - t0
    raw = wrap_members(exported, None)
    logits = predict_logits(raw, data.valid, cpu, cfg.eval_batch_size)
    raw_valid = auc_logloss(y, expit(logits))
    temperature = fit_temperature(logits, y) if cfg.calibrate else None
    net = wrap_members(exported, temperature)
    valid_probs = expit(logits / temperature) if temperature is not None else expit(logits)
    valid = auc_logloss(y, valid_probs)
    best_epoch = sum(r["best_epoch"] for r in exported_rows) / len(exported_rows)
    result = _combine(fits, net, {"epoch": best_epoch, **valid}, len(data.train))
    result.teacher = teacher_net
    desc = describe(net, len(data.space.categorical), len(data.space.numeric))
    test = evaluate(result.net, data.test, cpu, cfg.eval_batch_size) if data.test is not None else None
    recipe = recipe or adhoc_recipe(cfg, data.info.get("format"))
    recipe_ref = recipe.ref()
    if recipe.train != cfg:  # the recipe's settings with command-line changes on top
        given, ran = recipe.train.model_dump(), cfg.model_dump()
        recipe_ref["overrides"] = {k: ran[k] for k in ran if ran[k] != given.get(k)}
    metrics = {
        "model": cfg.model,
        "preset": cfg.preset,
        "recipe": recipe_ref,
        "structure": cfg.structure(),
        "valid": valid,
        "valid_uncalibrated": raw_valid,
        "calibration": reliability_table(y, valid_probs),  # ECE + bins of the exported model on valid
        "temperature": temperature,
        "members": exported_rows,
        "teacher": teacher_metrics,
        "test": test,
        "best_epoch": best_epoch,
        "epochs": result.epochs_run,
        "stopped_early": result.stopped_early,
        "seconds_per_epoch": result.seconds_per_epoch,
        "samples_per_second": result.samples_per_second,
        "train_wall_seconds": wall,
        "device": result.device,
        "amp": str(choice.dtype).removeprefix("torch.") if choice.amp else None,  # e.g. bfloat16 on CUDA
        "world_size": dist.world_size,
        "params": desc.params,
        "macs_per_sample": desc.macs_per_sample,
        "config": cfg.to_dict(),
        "warm_start": warm[0] if len(warm) == 1 else (warm or None),
        "data_fingerprint": data.fingerprint,
        "data": data.info,
        "git_commit": git_commit(),
        "created_at": datetime.now(UTC).isoformat(),
        "torch": str(torch.__version__),
    }
    return result, metrics


def build_bundle(
    registry: str | Path,
    data: PreparedData,
    cfg: TrainConfig,
    result: FitResult,
    metrics: dict[str, Any],
    *,
    set_current: bool = False,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Export (fp32, parity-checked), apply the recipe's precision gate, save checkpoint.pt, write the bundle."""
    space = data.space

    def write_onnx(path: Path) -> dict[str, Any]:
        info = export_onnx(result.net, space.cardinalities, len(space.numeric), path)
        info["precision"] = export_precision(path, cfg.export, data.valid, space)
        metrics["valid_served"] = info["precision"]["valid_served"]
        save_checkpoint(path.parent / CHECKPOINT_FILE, result.net, cfg, space, metrics)
        return info

    return write_bundle(
        registry,
        model_name=cfg.model,
        space=space,
        write_onnx=write_onnx,
        metrics=metrics,
        history=result.history,
        extra={"preset": cfg.preset, "valid_auc": metrics["valid"]["auc"], **(extra or {})},
        set_current=set_current,
    )


def train_bundle_outcome(
    data_path: str | Path,
    *,
    fmt: str = "csv",
    schema: str | Path | None = None,
    valid_path: str | Path | None = None,
    test_path: str | Path | None = None,
    valid_fraction: float = 0.1,
    test_fraction: float = 0.0,
    split_seed: int = 2024,
    min_count: int | None = None,
    config: TrainConfig | None = None,
    recipe: Recipe | None = None,
    registry: str | Path = "registry",
    set_current: bool = False,
    work_dir: str | Path | None = None,
    checkpoint: str | Path | None = None,
    force_cpu: bool = False,
    progress: bool = False,
) -> TrainOutcome:
    """``train_bundle`` returning metrics and the fit as well."""
    spec = resolve_spec(fmt, schema, min_count)
    cfg = config or (recipe.train if recipe is not None else default_config(fmt))
    data = prepare_data(
        data_path,
        spec,
        valid_path=valid_path,
        test_path=test_path,
        valid_fraction=valid_fraction,
        test_fraction=test_fraction,
        split_seed=split_seed,
        work_dir=work_dir,
        progress=progress,
    )
    result, metrics = train_on(data, cfg, force_cpu=force_cpu, progress=progress, recipe=recipe)
    if not dist_info_from_env().is_main:
        return TrainOutcome(None, metrics, result)
    bundle = build_bundle(registry, data, cfg, result, metrics, set_current=set_current)
    if checkpoint is not None:
        save_checkpoint(checkpoint, result.net, cfg, data.space, {**metrics, "history": result.history})
    log.info("bundle written: %s (valid AUC %.4f)", bundle, metrics["valid"]["auc"])
    return TrainOutcome(bundle, metrics, result)


def train_bundle(data_path: str | Path, **kwargs: Any) -> Path:
    """Train on ``data_path`` and write a bundle; returns ``<registry>/<version>``.

    Keyword arguments: fmt ("frappe" | "criteo" | "avazu" | "csv" | "parquet"), schema (schema file
    for csv/parquet), valid_path / test_path or valid_fraction / test_fraction / split_seed,
    min_count, config (TrainConfig) or recipe (Recipe; default: the format's default recipe),
    registry, set_current (write <registry>/CURRENT), work_dir (memmap encoded data there),
    checkpoint (also save a torch checkpoint there), force_cpu, progress.
    """
    out = train_bundle_outcome(data_path, **kwargs)
    if out.bundle_dir is None:
        raise RuntimeError("train_bundle ran on a non-zero torchrun rank: only rank 0 writes the bundle")
    return out.bundle_dir
