"""Wukong: stacked interaction layers of FMB (low-rank FM -> MLP) and LCB (linear compression) tokens.

Reuses ``num_layers`` for the number of interaction layers and ``block_hidden`` for the FMB MLP.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pydantic import Field
from torch import nn

from model.base import CTRModel
from model.layers import MLP, init_linear_weights
from model.settings import NetworkConfig


class WukongConfig(NetworkConfig):
    """Wukong: interaction layers of FMB + LCB blocks."""

    num_layers: int = Field(3, ge=1)
    head_hidden: int = Field(128, ge=1)
    block_hidden: int = Field(128, ge=1)
    layer_norm_eps: float = Field(1e-5, gt=0)
    num_emb_lcb: int = Field(8, ge=1)
    num_emb_fmb: int = Field(8, ge=1)
    rank_fmb: int = Field(8, ge=1)


class FactorizationMachineBlock(nn.Module):
    """FMB: Z = X (X^T Y) (B,n,rank) -- the low-rank form of X X^T -- then LN -> MLP -> (B, n_fmb, d)."""

    def __init__(self, num_in: int, cfg: WukongConfig) -> None:
        super().__init__()
        self.num_tokens, self.dim = cfg.num_emb_fmb, cfg.embedding_dim
        self.projection = nn.Parameter(torch.empty(num_in, cfg.rank_fmb))
        self.norm = nn.LayerNorm(num_in * cfg.rank_fmb, eps=cfg.layer_norm_eps)
        self.mlp = MLP(num_in * cfg.rank_fmb, (cfg.block_hidden,), self.num_tokens * self.dim, cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = torch.matmul(x, torch.matmul(x.transpose(1, 2), self.projection))
        return self.mlp(self.norm(z.flatten(1))).unflatten(1, (self.num_tokens, self.dim))


class LinearCompressionBlock(nn.Module):
    """LCB: n_lcb learned linear combinations of the input tokens, (B,n,d) -> (B, n_lcb, d)."""

    def __init__(self, num_in: int, num_out: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_out, num_in))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.matmul(self.weight, x)


class WukongLayer(nn.Module):
    """X_next = LayerNorm(concat(FMB(X), LCB(X)) + residual(X)); residual is LCB-like if n changes."""

    def __init__(self, num_in: int, cfg: WukongConfig) -> None:
        super().__init__()
        self.fmb = FactorizationMachineBlock(num_in, cfg)
        self.lcb = LinearCompressionBlock(num_in, cfg.num_emb_lcb)
        self.num_out = cfg.num_emb_fmb + cfg.num_emb_lcb
        self.residual = LinearCompressionBlock(num_in, self.num_out) if num_in != self.num_out else None
        self.norm = nn.LayerNorm(cfg.embedding_dim, eps=cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.cat([self.fmb(x), self.lcb(x)], dim=1)
        r = self.residual(x) if self.residual is not None else x
        return self.norm(h + r)


class Wukong(CTRModel):
    def __init__(self, cat_cardinalities: Sequence[int], num_numeric: int, config: WukongConfig) -> None:
        super().__init__(cat_cardinalities, num_numeric, config)
        num_in = self.num_fields
        layers = []
        for _ in range(config.num_layers):
            layer = WukongLayer(num_in, config)
            layers.append(layer)
            num_in = layer.num_out
        self.layers = nn.ModuleList(layers)
        self.head = MLP(num_in * config.embedding_dim, (config.head_hidden,), 1, config.dropout)
        init_linear_weights(self)
        for layer in self.layers:
            nn.init.xavier_uniform_(layer.fmb.projection)
            nn.init.xavier_uniform_(layer.lcb.weight)
            if layer.residual is not None:
                nn.init.xavier_uniform_(layer.residual.weight)

    def forward(self, cat_ids: torch.Tensor, numerics: torch.Tensor) -> torch.Tensor:
        x = self.embed(cat_ids, numerics)
        for layer in self.layers:
            x = layer(x)
        return self.head(x.flatten(1)).squeeze(-1)
