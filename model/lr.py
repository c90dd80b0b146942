"""Logistic regression: one learned weight per feature value (a 1-wide FeatureEmbedding) plus a bias."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from model.layers import FeatureEmbedding
from model.settings import NetworkConfig


class LRConfig(NetworkConfig):
    """Logistic regression reads no knob beyond the shared ones (its weights are 1-wide embeddings)."""


class LinearTerm(nn.Module):
    """sum_f w_f(x_f) + b: the first-order part shared by LR, FM and DeepFM."""

    def __init__(self, cat_cardinalities: Sequence[int], num_numeric: int) -> None:
        super().__init__()
        self.weights = FeatureEmbedding(cat_cardinalities, num_numeric, 1)
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, cat_ids: torch.Tensor, numerics: torch.Tensor) -> torch.Tensor:
        return self.weights(cat_ids, numerics).sum(dim=(1, 2)) + self.bias


class LR(nn.Module):
    """Logistic regression. Uses FeatureEmbedding with width 1 as its 'embedding' (no config knobs)."""

    def __init__(self, cat_cardinalities: Sequence[int], num_numeric: int, config: LRConfig) -> None:
        super().__init__()
        self.config = config
        self.linear = LinearTerm(cat_cardinalities, num_numeric)

    @property
    def embedding(self) -> FeatureEmbedding:
        return self.linear.weights

    def forward(self, cat_ids: torch.Tensor, numerics: torch.Tensor) -> torch.Tensor:
        return self.linear(cat_ids, numerics)
