"""Per-model hyper-parameters (pydantic), FuxiCTR-style: each model file declares the knobs it reads.

``NetworkConfig`` holds what every model has; ``model/<name>.py`` subclasses it (``DLFConfig``,
``DeepFMConfig``, ...). Training builds and records only the chosen model's config, so an LR run
no longer carries DLF settings. The flat ``ModelConfig`` dataclass (``model/config.py``) remains
the container of the named presets, from which each model takes its own fields.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class NetworkConfig(BaseModel):
    """Shared by every model: embedding width and the dropout rates."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    embedding_dim: int = Field(16, ge=1)
    embedding_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON view for metrics.json and logs."""
        return self.model_dump(mode="json")
