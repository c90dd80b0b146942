"""Model name -> class, and the one constructor the training code calls."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from model.config import ModelConfig
from model.dcnv2 import DCNv2
from model.deepfm import DeepFM
from model.dlf import DLF
from model.fm import FM
from model.lr import LR
from model.wukong import Wukong

MODEL_REGISTRY: dict[str, type[nn.Module]] = {
    "dlf": DLF,
    "lr": LR,
    "fm": FM,
    "deepfm": DeepFM,
    "dcnv2": DCNv2,
    "wukong": Wukong,
}
MODEL_NAMES: tuple[str, ...] = tuple(MODEL_REGISTRY)


def build_model(
    name: str,
    cat_cardinalities: Sequence[int],
    num_numeric: int,
    config: ModelConfig | None = None,
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
