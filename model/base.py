"""The common shape of every CTR model: one FeatureEmbedding, forward(cat_ids, numerics) -> logits [B]."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from model.config import ModelConfig
from model.layers import FeatureEmbedding


class CTRModel(nn.Module):
    """Base class: owns the config and the shared embedding; subclasses implement ``logits``."""

    def __init__(self, cat_cardinalities: Sequence[int], num_numeric: int, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.embedding = FeatureEmbedding(cat_cardinalities, num_numeric, config.embedding_dim)
        self.embedding_dropout = nn.Dropout(config.embedding_dropout)

    @property
    def num_fields(self) -> int:
        return self.embedding.num_fields

    def embed(self, cat_ids: torch.Tensor, numerics: torch.Tensor) -> torch.Tensor:
        """X0 = E(x): (B, F, d), with embedding dropout in training mode."""
        return self.embedding_dropout(self.embedding(cat_ids, numerics))

    def forward(self, cat_ids: torch.Tensor, numerics: torch.Tensor) -> torch.Tensor:
        """LongTensor [B, F_cat], FloatTensor [B, F_num] -> logits [B]."""
        raise NotImplementedError


class ProbabilityModel(nn.Module):
    """Wraps a CTR model so its output is sigmoid(logit): the bundle's ``probability`` output."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, cat_ids: torch.Tensor, numerics: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(cat_ids, numerics))
