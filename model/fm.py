"""Factorisation machine: linear term + sum of pairwise dot products of field embeddings."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from model.base import CTRModel
from model.lr import LinearTerm
from model.settings import NetworkConfig


def fm_interaction(x: torch.Tensor) -> torch.Tensor:
    """sum_{i<j} <x_i, x_j> for x (B, F, d), via 0.5 * ((sum x)^2 - sum x^2) in O(F d)."""
    square_of_sum = x.sum(dim=1).pow(2)
    sum_of_square = x.pow(2).sum(dim=1)
    return 0.5 * (square_of_sum - sum_of_square).sum(dim=1)


class FMConfig(NetworkConfig):
    """FM: the shared embedding width is the factor dimension."""


class FM(CTRModel):
    def __init__(self, cat_cardinalities: Sequence[int], num_numeric: int, config: FMConfig) -> None:
        super().__init__(cat_cardinalities, num_numeric, config)
        self.linear = LinearTerm(cat_cardinalities, num_numeric)

    def forward(self, cat_ids: torch.Tensor, numerics: torch.Tensor) -> torch.Tensor:
        return self.linear(cat_ids, numerics) + fm_interaction(self.embed(cat_ids, numerics))
