"""Model name -> class, and the one constructor the training code calls."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from model.config import ModelConfig, preset
from model.dcnv2 import DCNv2, DCNv2Config
from model.deepfm import DeepFM, DeepFMConfig
from model.dlf import DLF, DLFConfig
from model.fm import FM, FMConfig
from model.lr import LR, LRConfig
from model.settings import NetworkConfig
from model.wukong import Wukong, WukongConfig

MODEL_REGISTRY: dict[str, type[nn.Module]] = {
    "dlf": DLF,
    "lr": LR,
    "fm": FM,
    "deepfm": DeepFM,
    "dcnv2": DCNv2,
    "wukong": Wukong,
}
MODEL_NAMES: tuple[str, ...] = tuple(MODEL_REGISTRY)
MODEL_CONFIGS: dict[str, type[NetworkConfig]] = {
    "dlf": DLFConfig,
    "lr": LRConfig,
    "fm": FMConfig,
    "deepfm": DeepFMConfig,
    "dcnv2": DCNv2Config,
    "wukong": WukongConfig,
}


def network_config(
    name: str, preset_name: str = "small", overrides: dict[str, Any] | None = None
) -> NetworkConfig:
    """Model ``name``'s own config: its fields of the named preset, then ``overrides`` (validated).

    A setting no model has is an error listing the ones this model has; a setting of another
    model (e.g. DLF's ``num_layers`` when a recipe switches to ``--model lr``) is not used and not
    recorded.
    """
    try:
        cls = MODEL_CONFIGS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(MODEL_NAMES)}") from None
    known = set(cls.model_fields)
    anywhere = {f for c in MODEL_CONFIGS.values() for f in c.model_fields}
    unknown = sorted(set(overrides or {}) - anywhere)
    if unknown:
        raise ValueError(f"unknown model setting(s) {unknown} for {name}; known: {sorted(known)}")
    overrides = {k: v for k, v in (overrides or {}).items() if k in known}
    base = {k: v for k, v in preset(preset_name).to_dict().items() if k in known}
    return cls.model_validate({**base, **(overrides or {})})


def build_model(
    name: str,
    cat_cardinalities: Sequence[int],
    num_numeric: int,
    config: ModelConfig | NetworkConfig | None = None,
    seed: int | None = None,
) -> nn.Module:
    """Build model ``name`` for the given fields.

    ``cat_cardinalities[i]`` counts field i's ids including the OOV id 0. With ``seed`` the
    parameters are drawn from a private generator state, so two builds with one seed are identical
    and the caller's global RNG is left untouched.
    """
    try:
        cls = MODEL_REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(MODEL_NAMES)}") from None
    if isinstance(cat_cardinalities, (str, bytes)) or not isinstance(cat_cardinalities, Sequence):
        raise ValueError(
            f"cat_cardinalities must be a sequence of ints, got {type(cat_cardinalities).__name__}"
        )
    if isinstance(num_numeric, bool) or not isinstance(num_numeric, int):
        raise ValueError(f"num_numeric must be an int, got {num_numeric!r}")
    config = config if config is not None else ModelConfig()
    if seed is None:
        return cls(cat_cardinalities, num_numeric, config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return cls(cat_cardinalities, num_numeric, config)
