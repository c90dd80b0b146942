"""Torch checkpoints of the exported structure: saved into every bundle (warm start) or a given path.

Loadable with ``torch.load(weights_only=True)``: plain types and tensors only.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from model import build_model
from model.ensemble import LogitAverage, TemperatureScaled
from service.contract import FieldSchema
from training.bundle.export import export_onnx
from training.bundle.writer import write_bundle
from training.config import TrainConfig
from training.data.vocab import FeatureSpace

CHECKPOINT_FILE = "checkpoint.pt"


def save_checkpoint(
    path: str | Path, net: nn.Module, cfg: TrainConfig, space: FeatureSpace, metrics: dict[str, Any]
) -> None:
    """Everything needed to rebuild and re-export the model (atomic write)."""
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


def _wrap(members: list[nn.Module], temperature: float | None) -> nn.Module:
    net: nn.Module = members[0] if len(members) == 1 else LogitAverage(members)
    return (TemperatureScaled(net, temperature) if temperature is not None else net).eval()


def load_checkpoint(path: str | Path) -> tuple[nn.Module, TrainConfig, FeatureSpace, dict[str, Any]]:
    """(net in its exported structure, config, feature space, metrics) from ``save_checkpoint``."""
    payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    cfg = TrainConfig.from_dict(dict(payload["train_config"]))
    space = FeatureSpace(
        fields=[FieldSchema(**f) for f in payload["fields"]], vocabs=payload["vocabs"], label=payload["label"]
    )
    # the structure comes from the saved weights: members (ensemble) or one net (single / student)
    state = payload["state_dict"]
    prefix = "net." if "temperature" in state else ""
    ids = {k[len(prefix) :].split(".")[1] for k in state if k.startswith(f"{prefix}members.")}
    net_cfg = cfg.student_config() if cfg.distill is not None else cfg
    members = [
        build_model(
            net_cfg.model,
            cat_cardinalities=space.cardinalities,
            num_numeric=len(space.numeric),
            config=net_cfg.network_config(),
        )
        for _ in range(max(len(ids), 1))
    ]
    temperature = state.get("temperature")
    net = _wrap(members, float(temperature) if temperature is not None else None)
    net.load_state_dict(state)
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
