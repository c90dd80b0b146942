"""PyTorch CTR models: DLF and baselines behind one registry. No I/O, no data code."""

from model.base import CTRModel, ProbabilityModel
from model.config import PRESET_NAMES, ModelConfig, preset
from model.describe import ModelDescription, describe
from model.registry import MODEL_CONFIGS, MODEL_NAMES, MODEL_REGISTRY, build_model, network_config
from model.settings import NetworkConfig

__all__ = [
    "MODEL_CONFIGS",
    "NetworkConfig",
    "network_config",
    "MODEL_NAMES",
    "MODEL_REGISTRY",
    "PRESET_NAMES",
    "CTRModel",
    "ModelConfig",
    "ModelDescription",
    "ProbabilityModel",
    "build_model",
    "describe",
    "preset",
]
