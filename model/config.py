"""The named presets (``small``, ``paper``) as one flat frozen dataclass covering every model's knobs.

Training does not pass this around any more: ``model.registry.network_config(name, preset, overrides)``
takes the chosen model's fields from a preset into that model's own pydantic config (``DLFConfig``
in ``model/dlf.py``, ...). ``ModelConfig`` stays as the preset container and for direct
``build_model`` calls (tests, the describe CLI), which accept either kind.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal

PresetName = Literal["paper", "small"]


@dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters for every model in the registry.

    Frozen so a config can be shared and logged safely; derive variants with
    ``dataclasses.replace(cfg, use_rli=False)``. Baselines read only the knobs they need.
    """

    # shared
    embedding_dim: int = 16
    embedding_dropout: float = 0.0
    dropout: float = 0.0
    head_hidden: int = 128
    layer_norm_eps: float = 1e-5
    # DLF (also reused by Wukong: num_layers interaction layers, block_hidden for the FMB MLP)
    num_layers: int = 3
    num_tokens: int = 8
    rank: int = 8
    block_hidden: int = 128
    naf_layers: int = 1
    num_heads: int = 2
    use_gate: bool = True
    use_rli: bool = True
    use_naf: bool = True
    # DeepFM / DCNv2 deep part
    dnn_hidden: tuple[int, ...] = (128, 64)
    # DCNv2
    cross_layers: int = 3
    dcn_structure: Literal["parallel", "stacked"] = "parallel"
    # Wukong
    num_emb_lcb: int = 8
    num_emb_fmb: int = 8
    rank_fmb: int = 8

    def __post_init__(self) -> None:
        positive = (
            "embedding_dim",
            "head_hidden",
            "num_layers",
            "num_tokens",
            "rank",
            "block_hidden",
            "naf_layers",
            "num_heads",
            "cross_layers",
            "num_emb_lcb",
            "num_emb_fmb",
            "rank_fmb",
        )
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"ModelConfig.{name} must be a positive int, got {value!r}")
        for name in ("dropout", "embedding_dropout"):
            value = getattr(self, name)
            if not 0.0 <= float(value) < 1.0:
                raise ValueError(f"ModelConfig.{name} must be in [0, 1), got {value!r}")
        if not self.layer_norm_eps > 0:
            raise ValueError(f"ModelConfig.layer_norm_eps must be > 0, got {self.layer_norm_eps!r}")
        if self.embedding_dim % self.num_heads:
            raise ValueError(
                f"ModelConfig.num_heads={self.num_heads} must divide embedding_dim={self.embedding_dim}"
            )
        if any(not isinstance(h, int) or h < 1 for h in self.dnn_hidden):
            raise ValueError(f"ModelConfig.dnn_hidden must be positive ints, got {self.dnn_hidden!r}")
        if self.dcn_structure not in ("parallel", "stacked"):
            raise ValueError(
                f"ModelConfig.dcn_structure must be 'parallel' or 'stacked', got {self.dcn_structure!r}"
            )

    def to_dict(self) -> dict[str, object]:
        """Plain-JSON view (tuples become lists) for metrics.json and logs."""
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> ModelConfig:
        """Inverse of ``to_dict``; unknown keys are an error so typos do not pass silently."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown ModelConfig field(s): {', '.join(unknown)}")
        values = dict(data)
        if "dnn_hidden" in values:
            values["dnn_hidden"] = tuple(values["dnn_hidden"])  # type: ignore[arg-type]
        return cls(**values)  # type: ignore[arg-type]


_PRESETS: dict[str, dict[str, object]] = {
    # The paper / reference-code setting (Section 5.1 and the FuxiCTR config).
    "paper": dict(
        embedding_dim=64,
        num_layers=8,
        num_tokens=16,
        rank=24,
        block_hidden=512,
        head_hidden=512,
        naf_layers=2,
        num_heads=4,
        dnn_hidden=(512, 256),
        num_emb_lcb=16,
        num_emb_fmb=16,
        rank_fmb=24,
    ),
    # CPU-serving preset: about 1 M multiply-adds per sample on Frappe-sized inputs.
    "small": dict(
        embedding_dim=16,
        num_layers=3,
        num_tokens=8,
        rank=8,
        block_hidden=128,
        head_hidden=128,
        naf_layers=1,
        num_heads=2,
        dnn_hidden=(128, 64),
        num_emb_lcb=8,
        num_emb_fmb=8,
        rank_fmb=8,
    ),
}

PRESET_NAMES: tuple[str, ...] = tuple(_PRESETS)


def preset(name: str) -> ModelConfig:
    """Return a fresh config for a named preset ('paper' or 'small')."""
    try:
        values = _PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; known presets: {', '.join(PRESET_NAMES)}") from None
    return ModelConfig(**values)  # type: ignore[arg-type]
