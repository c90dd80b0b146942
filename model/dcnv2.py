"""DCNv2: full-rank cross network x_{l+1} = x0 * (W x_l + b) + x_l, with a deep MLP stacked or parallel."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

import torch
from pydantic import Field
from torch import nn

from model.base import CTRModel
from model.layers import MLP, init_linear_weights
from model.settings import NetworkConfig


class DCNv2Config(NetworkConfig):
    """DCNv2: cross layers, parallel or stacked, and the deep part."""

    dnn_hidden: tuple[Annotated[int, Field(ge=1)], ...] = (128, 64)
    cross_layers: int = Field(3, ge=1)
    dcn_structure: Literal["parallel", "stacked"] = "parallel"


class CrossNetV2(nn.Module):
    def __init__(self, width: int, num_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(width, width) for _ in range(num_layers))

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for layer in self.layers:
            x = x0 * layer(x) + x
        return x


class DCNv2(CTRModel):
    """``dcn_structure='parallel'``: [cross(x0) || deep(x0)] -> logit; 'stacked': deep(cross(x0)) -> logit."""

    def __init__(self, cat_cardinalities: Sequence[int], num_numeric: int, config: DCNv2Config) -> None:
        super().__init__(cat_cardinalities, num_numeric, config)
        width = self.num_fields * config.embedding_dim
        self.stacked = config.dcn_structure == "stacked"
        self.cross = CrossNetV2(width, config.cross_layers)
        self.deep = MLP(width, config.dnn_hidden, dropout=config.dropout)
        self.out = nn.Linear(self.deep.out_dim if self.stacked else width + self.deep.out_dim, 1)
        init_linear_weights(self)

    def forward(self, cat_ids: torch.Tensor, numerics: torch.Tensor) -> torch.Tensor:
        x0 = self.embed(cat_ids, numerics).flatten(1)
        if self.stacked:
            return self.out(self.deep(self.cross(x0))).squeeze(-1)
        return self.out(torch.cat([self.cross(x0), self.deep(x0)], dim=1)).squeeze(-1)
