"""Data -> bundle in one call: ``train_bundle`` (used by the CLI, the service tests and the demo run).

Also the checkpoint round trip (``save_checkpoint`` / ``export_checkpoint``) so a trained
model can be re-exported into a fresh bundle without retraining.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn

from model import ModelConfig, build_model, describe
from service.bundle import FieldSchema
from training.bundle_writer import git_commit, write_bundle
from training.config import TrainConfig, default_config
from training.dataset import PreparedData, prepare_data
from training.device import dist_info_from_env, init_distributed, seed_everything, select_device
from training.export import export_onnx
from training.spec import resolve_spec
from training.trainer import FitResult, evaluate, fit
from training.vocab import FeatureSpace

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


def train_on(
    data: PreparedData, cfg: TrainConfig, *, force_cpu: bool = False, progress: bool = False
) -> tuple[FitResult, dict[str, Any]]:
    """Train on prepared splits; returns the fit and a metrics dict (valid/test AUC + logloss, speed, cost)."""
    dist = dist_info_from_env()
    choice = select_device(
        force_cpu=force_cpu, amp=cfg.amp, local_rank=dist.local_rank if dist.enabled else None
    )
    init_distributed(dist, choice)
    net = build_net(cfg, data.space)
    desc = describe(net, len(data.space.categorical), len(data.space.numeric))
    t0 = time.perf_counter()
    result = fit(net, data.train, data.valid, cfg, choice, dist, progress=progress)
    wall = time.perf_counter() - t0
    cpu = select_device(cuda_available=False)
    valid = {k: result.best[k] for k in ("auc", "logloss")} | {"rows": len(data.valid)}
    test = evaluate(result.net, data.test, cpu, cfg.eval_batch_size) if data.test is not None else None
    metrics = {
        "model": cfg.model,
        "preset": cfg.preset,
        "valid": valid,
        "test": test,
        "best_epoch": result.best["epoch"],
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
    net = build_model(
        cfg.model, cat_cardinalities=space.cardinalities, num_numeric=len(space.numeric), config=model_cfg
    )
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
