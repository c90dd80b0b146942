"""DeepFM: FM (linear + pairwise) and a DNN over the same embeddings, logits summed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import torch
from pydantic import Field

from model.base import CTRModel
from model.fm import fm_interaction
from model.layers import MLP, init_linear_weights
from model.lr import LinearTerm
from model.settings import NetworkConfig


class DeepFMConfig(NetworkConfig):
    """DeepFM: the deep part's hidden widths."""

    dnn_hidden: tuple[Annotated[int, Field(ge=1)], ...] = (128, 64)


class DeepFM(CTRModel):
    def __init__(self, cat_cardinalities: Sequence[int], num_numeric: int, config: DeepFMConfig) -> None:
        super().__init__(cat_cardinalities, num_numeric, config)
        self.linear = LinearTerm(cat_cardinalities, num_numeric)
        self.dnn = MLP(self.num_fields * config.embedding_dim, config.dnn_hidden, 1, config.dropout)
        init_linear_weights(self)

    def forward(self, cat_ids: torch.Tensor, numerics: torch.Tensor) -> torch.Tensor:
        x = self.embed(cat_ids, numerics)
        deep = self.dnn(x.flatten(1)).squeeze(-1)
        return self.linear(cat_ids, numerics) + fm_interaction(x) + deep
