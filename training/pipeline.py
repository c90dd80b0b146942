"""Data -> bundle in one call: ``train_bundle`` (used by the CLI, the service tests and the demo run).

Also the checkpoint round trip (``save_checkpoint`` / ``export_checkpoint``) so a trained
model can be re-exported into a fresh bundle without retraining.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from scipy.special import expit
from torch import nn

from model import ModelConfig, build_model, describe
from model.ensemble import LogitAverage, TemperatureScaled
from service.contract import FieldSchema
from training.bundle.export import export_onnx
from training.bundle.writer import git_commit, write_bundle
from training.config import TrainConfig, default_config
from training.data.dataset import PreparedData, prepare_data
from training.data.spec import resolve_spec
from training.data.vocab import FeatureSpace
from training.fitting.calibration import fit_temperature, predict_logits
from training.fitting.device import dist_info_from_env, init_distributed, seed_everything, select_device
from training.fitting.metrics import auc_logloss
from training.fitting.reliability import reliability_table
from training.fitting.trainer import FitResult, evaluate, fit

log = logging.getLogger("training")


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
        config=cfg.model_config(),
    )


def member_configs(cfg: TrainConfig) -> list[TrainConfig]:
    """One config per ensemble member: seeds seed, seed+1, ... (a single net keeps ``cfg`` as is)."""
    if cfg.ensemble == 1:
        return [cfg]
    return [dataclasses.replace(cfg, seed=cfg.seed + i) for i in range(cfg.ensemble)]


def wrap_members(members: list[nn.Module], temperature: float | None) -> nn.Module:
    """The exported structure: a single net or LogitAverage, then TemperatureScaled when calibrated."""
    net: nn.Module = members[0] if len(members) == 1 else LogitAverage(members)
    return (TemperatureScaled(net, temperature) if temperature is not None else net).eval()


def _combine(fits: list[FitResult], net: nn.Module, best: dict[str, float], n_train: int) -> FitResult:
    """One FitResult for the ensemble: histories tagged with their member, costs summed."""
    if len(fits) == 1:
        return dataclasses.replace(fits[0], net=net, best=best)
    seconds = sum(f.seconds_per_epoch * f.epochs_run for f in fits)
    epochs = sum(f.epochs_run for f in fits)
    return FitResult(
        net=net,
        history=[{**h, "member": i} for i, f in enumerate(fits) for h in f.history],
        best=best,
        epochs_run=epochs,
        seconds_per_epoch=seconds / max(epochs, 1e-9),
        samples_per_second=epochs * n_train / max(seconds, 1e-9),
        device=fits[0].device,
        stopped_early=all(f.stopped_early for f in fits),
        extra={**fits[0].extra, "members": len(fits)},
    )


def train_on(
    data: PreparedData, cfg: TrainConfig, *, force_cpu: bool = False, progress: bool = False
) -> tuple[FitResult, dict[str, Any]]:
    """Train on prepared splits; returns the fit and a metrics dict (valid/test AUC + logloss, speed, cost).

    With ``cfg.ensemble`` K > 1, K members are trained one after another and their logits averaged;
    with ``cfg.calibrate`` a temperature is fitted on the valid logits of the final (averaged) model.
    ``metrics["valid"]`` is what the exported model scores; ``valid_uncalibrated`` is before T.
    """
    dist = dist_info_from_env()
    choice = select_device(
        force_cpu=force_cpu, amp=cfg.amp, local_rank=dist.local_rank if dist.enabled else None
    )
    init_distributed(dist, choice)
    t0 = time.perf_counter()
    fits = []
    for i, mcfg in enumerate(member_configs(cfg)):
        if cfg.ensemble > 1:
            log.info("ensemble member %d/%d (seed %d)", i + 1, cfg.ensemble, mcfg.seed)
        fits.append(
            fit(build_net(mcfg, data.space), data.train, data.valid, mcfg, choice, dist, progress=progress)
        )
    wall = time.perf_counter() - t0
    cpu = select_device(cuda_available=False)
    raw = wrap_members([f.net for f in fits], None)
    y = data.valid.labels()
    logits = predict_logits(raw, data.valid, cpu, cfg.eval_batch_size)
    raw_valid = auc_logloss(y, expit(logits))
    temperature = fit_temperature(logits, y) if cfg.calibrate else None
    net = wrap_members([f.net for f in fits], temperature)
    valid_probs = expit(logits / temperature) if temperature is not None else expit(logits)
    valid = auc_logloss(y, valid_probs)
    best_epoch = sum(f.best["epoch"] for f in fits) / len(fits)
    result = _combine(fits, net, {"epoch": best_epoch, **valid}, len(data.train))
    desc = describe(net, len(data.space.categorical), len(data.space.numeric))
    test = evaluate(result.net, data.test, cpu, cfg.eval_batch_size) if data.test is not None else None
    metrics = {
        "model": cfg.model,
        "preset": cfg.preset,
        "valid": valid,
        "valid_uncalibrated": raw_valid,
        "calibration": reliability_table(y, valid_probs),  # ECE + bins of the exported model on valid
        "temperature": temperature,
        "members": [
            {
                "seed": m.seed,
                "best_epoch": f.best["epoch"],
                "auc": f.best["auc"],
                "logloss": f.best["logloss"],
            }
            for m, f in zip(member_configs(cfg), fits, strict=True)
        ],
        "test": test,
        "best_epoch": best_epoch,
        "epochs": result.epochs_run,
        "stopped_early": result.stopped_early,
        "seconds_per_epoch": result.seconds_per_epoch,
        "samples_per_second": result.samples_per_second,
        "train_wall_seconds": wall,
        "device": result.device,
        "world_size": dist.world_size,
        "params": desc.params,
        "macs_per_sample": desc.macs_per_sample,
        "config": cfg.to_dict(),
        "data_fingerprint": data.fingerprint,
        "data": data.info,
        "git_commit": git_commit(),
        "created_at": datetime.now(UTC).isoformat(),
        "torch": str(torch.__version__),
    }
    return result, metrics


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
    registry: str | Path = "registry",
    set_current: bool = False,
    work_dir: str | Path | None = None,
    checkpoint: str | Path | None = None,
    force_cpu: bool = False,
    progress: bool = False,
) -> TrainOutcome:
    """``train_bundle`` returning metrics and the fit as well."""
    spec = resolve_spec(fmt, schema, min_count)
    cfg = config or default_config(fmt)
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
    result, metrics = train_on(data, cfg, force_cpu=force_cpu, progress=progress)
    if not dist_info_from_env().is_main:
        return TrainOutcome(None, metrics, result)
    if checkpoint is not None:
        save_checkpoint(checkpoint, result.net, cfg, data.space, {**metrics, "history": result.history})
    bundle = write_bundle(
        registry,
        model_name=cfg.model,
        space=data.space,
        write_onnx=lambda p: export_onnx(result.net, data.space.cardinalities, len(data.space.numeric), p),
        metrics=metrics,
        history=result.history,
        extra={"preset": cfg.preset, "valid_auc": metrics["valid"]["auc"]},
        set_current=set_current,
    )
    log.info("bundle written: %s (valid AUC %.4f)", bundle, metrics["valid"]["auc"])
    return TrainOutcome(bundle, metrics, result)


def train_bundle(data_path: str | Path, **kwargs: Any) -> Path:
    """Train on ``data_path`` and write a bundle; returns ``<registry>/<version>``.

    Keyword arguments: fmt ("frappe" | "criteo" | "avazu" | "csv" | "parquet"), schema (schema file
    for csv/parquet), valid_path / test_path or valid_fraction / test_fraction / split_seed,
    min_count, config (TrainConfig; default: tuned defaults for the format), registry,
    set_current (write <registry>/CURRENT), work_dir (memmap encoded data there), checkpoint
    (also save a torch checkpoint), force_cpu, progress.
    """
    out = train_bundle_outcome(data_path, **kwargs)
    if out.bundle_dir is None:
        raise RuntimeError("train_bundle ran on a non-zero torchrun rank: only rank 0 writes the bundle")
    return out.bundle_dir


# --- checkpoints ------------------------------------------------------------------


def save_checkpoint(
    path: str | Path, net: nn.Module, cfg: TrainConfig, space: FeatureSpace, metrics: dict[str, Any]
) -> None:
    """Everything needed to rebuild and re-export the model; loadable with weights_only=True."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "train_config": cfg.to_dict(),
        "fields": [asdict(f) for f in space.fields],
        "vocabs": space.vocabs,
        "label": space.label,
        # JSON round trip: plain types only, as weights_only loading requires
        "metrics": json.loads(json.dumps({k: v for k, v in metrics.items() if k != "config"}, default=str)),
        "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
    }
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_checkpoint(path: str | Path) -> tuple[nn.Module, TrainConfig, FeatureSpace, dict[str, Any]]:
    payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    tc = dict(payload["train_config"])
    model_cfg = ModelConfig.from_dict(tc.pop("model_config"))
    cfg = TrainConfig(**tc)
    space = FeatureSpace(
        fields=[FieldSchema(**f) for f in payload["fields"]], vocabs=payload["vocabs"], label=payload["label"]
    )
    # the structure comes from the saved weights (retrain saves single nets under an ensemble config)
    state = payload["state_dict"]
    prefix = "net." if "temperature" in state else ""
    ids = {k[len(prefix) :].split(".")[1] for k in state if k.startswith(f"{prefix}members.")}
    members = [
        build_model(
            cfg.model, cat_cardinalities=space.cardinalities, num_numeric=len(space.numeric), config=model_cfg
        )
        for _ in range(max(len(ids), 1))
    ]
    temperature = state.get("temperature")
    net = wrap_members(members, float(temperature) if temperature is not None else None)
    net.load_state_dict(payload["state_dict"])
    return net.eval(), cfg, space, payload["metrics"]


def export_checkpoint(checkpoint: str | Path, registry: str | Path, *, set_current: bool = False) -> Path:
    """Re-export a saved checkpoint as a new bundle version (metrics carried over from training)."""
    net, cfg, space, metrics = load_checkpoint(checkpoint)
    metrics = {**metrics, "config": cfg.to_dict(), "re_exported_from": str(checkpoint)}
    history = metrics.pop("history", None) or []
    return write_bundle(
        registry,
        model_name=cfg.model,
        space=space,
        write_onnx=lambda p: export_onnx(net, space.cardinalities, len(space.numeric), p),
        metrics=metrics,
        history=history,
        extra={"preset": cfg.preset, "valid_auc": metrics.get("valid", {}).get("auc")},
        set_current=set_current,
    )
