"""DLF (Dynamic Low-order-aware Fusion), as written out in ../shared/docs/dlf-model.md.

Per layer: three RLI pathways (low-order: interacts with X0; high-order: interacts with itself;
implicit: MLP), NAF attention fusion over the blocks, a gated residual and LayerNorm.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pydantic import Field, model_validator
from torch import nn

from model.base import CTRModel
from model.layers import MLP, attention, init_linear_weights, merge_heads, split_heads
from model.settings import NetworkConfig


class DLFConfig(NetworkConfig):
    """DLF (docs/model.md): layers of RLI blocks fused by NAF, gated residual; ablation switches."""

    num_layers: int = Field(3, ge=1)
    num_tokens: int = Field(8, ge=1)
    rank: int = Field(8, ge=1)
    block_hidden: int = Field(128, ge=1)
    head_hidden: int = Field(128, ge=1)
    naf_layers: int = Field(1, ge=1)
    num_heads: int = Field(2, ge=1)
    layer_norm_eps: float = Field(1e-5, gt=0)
    use_gate: bool = True
    use_rli: bool = True
    use_naf: bool = True

    @model_validator(mode="after")
    def _heads_divide_width(self) -> DLFConfig:
        if self.embedding_dim % self.num_heads:
            raise ValueError(f"num_heads={self.num_heads} must divide embedding_dim={self.embedding_dim}")
        return self


class LowOrderBlock(nn.Module):
    """Eq. 5: S = X^T W_lo (B,d,r); Z = X0 S (B,F,r); H_lo = MLP(LN(flatten Z)) -> (B,k,d)."""

    def __init__(self, num_in: int, num_fields: int, cfg: DLFConfig) -> None:
        super().__init__()
        self.num_tokens, self.dim = cfg.num_tokens, cfg.embedding_dim
        self.weight = nn.Parameter(torch.empty(num_in, cfg.rank))
        self.norm = nn.LayerNorm(num_fields * cfg.rank, eps=cfg.layer_norm_eps)
        self.mlp = MLP(num_fields * cfg.rank, (cfg.block_hidden,), self.num_tokens * self.dim, cfg.dropout)

    def forward(self, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        s = torch.matmul(x.transpose(1, 2), self.weight)  # (B, d, r)
        z = torch.matmul(x0, s)  # (B, F, r): order grows by one per layer
        return self.mlp(self.norm(z.flatten(1))).unflatten(1, (self.num_tokens, self.dim))


class HighOrderBlock(nn.Module):
    """Eq. 6 (CrossNet-like): S = X^T W_hi; Z = X S (B,n,r); H_hi = MLP(LN(flatten Z)) -> (B,k,d)."""

    def __init__(self, num_in: int, cfg: DLFConfig) -> None:
        super().__init__()
        self.num_tokens, self.dim = cfg.num_tokens, cfg.embedding_dim
        self.weight = nn.Parameter(torch.empty(num_in, cfg.rank))
        self.norm = nn.LayerNorm(num_in * cfg.rank, eps=cfg.layer_norm_eps)
        self.mlp = MLP(num_in * cfg.rank, (cfg.block_hidden,), self.num_tokens * self.dim, cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.matmul(x.transpose(1, 2), self.weight)  # (B, d, r)
        z = torch.matmul(x, s)  # (B, n, r): order doubles per layer
        return self.mlp(self.norm(z.flatten(1))).unflatten(1, (self.num_tokens, self.dim))


class ImplicitBlock(nn.Module):
    """Eq. 7: H_im = MLP(flatten X) -> (B,k,d)."""

    def __init__(self, num_in: int, cfg: DLFConfig) -> None:
        super().__init__()
        self.num_tokens, self.dim = cfg.num_tokens, cfg.embedding_dim
        self.mlp = MLP(num_in * self.dim, (cfg.block_hidden,), self.num_tokens * self.dim, cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x.flatten(1)).unflatten(1, (self.num_tokens, self.dim))


class NAFStep(nn.Module):
    """One attention step (Eq. 10-15): per block, cross-attention to the other blocks + self-attention.

    A_b = [C_b || S_b] W_O + b_O with per-block Q/K/V projections and one shared W_O.
    """

    def __init__(self, num_blocks: int, dim: int, num_heads: int) -> None:
        super().__init__()
        if num_blocks < 2:
            raise ValueError(f"NAF needs at least two blocks to cross-attend, got {num_blocks}")
        self.num_heads, self.dim, self.head_dim = num_heads, dim, dim // num_heads
        self.qkv = nn.ModuleList(nn.Linear(dim, 3 * dim) for _ in range(num_blocks))
        self.out = nn.Linear(2 * dim, dim)

    def forward(self, blocks: list[torch.Tensor]) -> list[torch.Tensor]:
        q, k, v = [], [], []
        d = self.dim
        for h, proj in zip(blocks, self.qkv, strict=True):
            # one fused projection per block; sliced, not chunked (Split changed form in opset 18)
            qkv = proj(h)
            q.append(split_heads(qkv[..., :d], self.num_heads))
            k.append(split_heads(qkv[..., d : 2 * d], self.num_heads))
            v.append(split_heads(qkv[..., 2 * d :], self.num_heads))
        fused = []
        for b in range(len(blocks)):
            others = [i for i in range(len(blocks)) if i != b]
            k_other = torch.cat([k[i] for i in others], dim=2)
            v_other = torch.cat([v[i] for i in others], dim=2)
            cross = merge_heads(attention(q[b], k_other, v_other, self.head_dim))
            self_ = merge_heads(attention(q[b], k[b], v[b], self.head_dim))
            fused.append(self.out(torch.cat([cross, self_], dim=-1)))
        return fused


class NAF(nn.Module):
    """``naf_layers`` stacked attention steps; each step's A_b is the next step's H_b."""

    def __init__(self, num_blocks: int, cfg: DLFConfig) -> None:
        super().__init__()
        self.steps = nn.ModuleList(
            NAFStep(num_blocks, cfg.embedding_dim, cfg.num_heads) for _ in range(cfg.naf_layers)
        )

    def forward(self, blocks: list[torch.Tensor]) -> list[torch.Tensor]:
        for step in self.steps:
            blocks = step(blocks)
        return blocks


class TokenProjection(nn.Module):
    """R = (X^T P)^T with P: (n_in, n_out), so the residual matches H's token count."""

    def __init__(self, num_in: int, num_out: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_in, num_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.matmul(x.transpose(1, 2), self.weight).transpose(1, 2)


class DLFLayer(nn.Module):
    """One DLF layer: RLI blocks -> NAF -> gated residual -> LayerNorm. (B,n,d) -> (B,n_out,d)."""

    def __init__(self, num_in: int, num_fields: int, cfg: DLFConfig) -> None:
        super().__init__()
        if cfg.use_rli:
            self.low_order = LowOrderBlock(num_in, num_fields, cfg)
        self.high_order = HighOrderBlock(num_in, cfg)
        self.implicit = ImplicitBlock(num_in, cfg)
        num_blocks = 3 if cfg.use_rli else 2
        self.naf = NAF(num_blocks, cfg) if cfg.use_naf else None
        self.num_out = cfg.num_tokens * num_blocks * (2 if cfg.use_naf else 1)
        self.residual = TokenProjection(num_in, self.num_out) if num_in != self.num_out else None
        self.gate = nn.Parameter(torch.empty(self.num_out, cfg.embedding_dim)) if cfg.use_gate else None
        self.norm = nn.LayerNorm(cfg.embedding_dim, eps=cfg.layer_norm_eps)

    def blocks(self, x: torch.Tensor, x0: torch.Tensor) -> list[torch.Tensor]:
        """Raw block outputs [H_lo?, H_hi, H_im], each (B, k, d)."""
        out = [self.low_order(x, x0)] if hasattr(self, "low_order") else []
        return [*out, self.high_order(x), self.implicit(x)]

    def forward(self, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        raw = self.blocks(x, x0)
        fused = self.naf(raw) if self.naf is not None else []
        h = torch.cat([*fused, *raw], dim=1)
        r = self.residual(x) if self.residual is not None else x
        if self.gate is not None:
            r = torch.sigmoid(self.gate * h) * r
        return self.norm(h + r)


class DLF(CTRModel):
    """Embedding -> L DLF layers -> MLP head -> logit."""

    def __init__(self, cat_cardinalities: Sequence[int], num_numeric: int, config: DLFConfig) -> None:
        super().__init__(cat_cardinalities, num_numeric, config)
        num_in = self.num_fields
        layers = []
        for _ in range(config.num_layers):
            layer = DLFLayer(num_in, self.num_fields, config)
            layers.append(layer)
            num_in = layer.num_out
        self.layers = nn.ModuleList(layers)
        self.head = MLP(num_in * config.embedding_dim, (config.head_hidden,), 1, config.dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init_linear_weights(self)
        for layer in self.layers:
            for block in (getattr(layer, "low_order", None), layer.high_order):
                if block is not None:
                    nn.init.xavier_uniform_(block.weight)
            if layer.residual is not None:
                nn.init.xavier_uniform_(layer.residual.weight)
            if layer.gate is not None:
                nn.init.xavier_uniform_(layer.gate)

    def forward(self, cat_ids: torch.Tensor, numerics: torch.Tensor) -> torch.Tensor:
        x0 = self.embed(cat_ids, numerics)
        x = x0
        for layer in self.layers:
            x = layer(x, x0)
        return self.head(x.flatten(1)).squeeze(-1)
