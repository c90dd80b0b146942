"""Building blocks shared by every model: the feature embedding, an MLP, attention and init."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

EMBEDDING_INIT_STD = 0.01


def _exporting() -> bool:
    """True while torch.export / the ONNX exporter traces the model (no data-dependent checks then)."""
    return torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling() or torch.jit.is_tracing()


class FeatureEmbedding(nn.Module):
    """Embeds categorical ids and numeric values into one (B, F_cat + F_num, dim) tensor.

    Categorical fields share one concatenated table addressed with per-field offsets (one gather
    instead of F_cat, which keeps the ONNX graph small). Id 0 of every field is its OOV id and a
    real row. Numeric field f becomes ``value * v_f`` with a learned vector ``v_f``.
    """

    def __init__(self, cat_cardinalities: Sequence[int], num_numeric: int, dim: int) -> None:
        super().__init__()
        cards = [int(c) for c in cat_cardinalities]
        for i, c in enumerate(cards):
            if c < 1:
                raise ValueError(f"cat_cardinalities[{i}] must be >= 1 (it includes the OOV id 0), got {c}")
        if num_numeric < 0:
            raise ValueError(f"num_numeric must be >= 0, got {num_numeric}")
        if not cards and num_numeric == 0:
            raise ValueError("at least one categorical or numeric field is required")
        self.cat_cardinalities = tuple(cards)
        self.num_cat = len(cards)
        self.num_numeric = int(num_numeric)
        self.dim = int(dim)
        offsets = [0]
        for c in cards[:-1]:
            offsets.append(offsets[-1] + c)
        self.register_buffer("offsets", torch.tensor(offsets if cards else [], dtype=torch.long), False)
        self.register_buffer("cardinalities", torch.tensor(cards, dtype=torch.long), persistent=False)
        self.table = nn.Embedding(sum(cards), dim) if cards else None
        self.numeric_weight = nn.Parameter(torch.empty(num_numeric, dim)) if num_numeric else None
        self.reset_parameters()

    @property
    def num_fields(self) -> int:
        return self.num_cat + self.num_numeric

    def reset_parameters(self) -> None:
        if self.table is not None:
            nn.init.normal_(self.table.weight, std=EMBEDDING_INIT_STD)
        if self.numeric_weight is not None:
            nn.init.normal_(self.numeric_weight, std=EMBEDDING_INIT_STD)

    def check_inputs(self, cat_ids: torch.Tensor, numerics: torch.Tensor) -> None:
        """Raise ValueError naming the input and the problem (shape, dtype, id range).

        Skipped while exporting: the checks are Python control flow the exported graph cannot keep.
        """
        if _exporting():
            return
        if cat_ids.dim() != 2 or cat_ids.shape[1] != self.num_cat:
            raise ValueError(f"cat_ids must have shape [B, {self.num_cat}], got {list(cat_ids.shape)}")
        if numerics.dim() != 2 or numerics.shape[1] != self.num_numeric:
            raise ValueError(f"numerics must have shape [B, {self.num_numeric}], got {list(numerics.shape)}")
        if cat_ids.shape[0] != numerics.shape[0]:
            raise ValueError(
                f"batch sizes differ: cat_ids {cat_ids.shape[0]} vs numerics {numerics.shape[0]}"
            )
        if cat_ids.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"cat_ids must be an integer tensor (int64), got {cat_ids.dtype}")
        if not numerics.is_floating_point():
            raise ValueError(f"numerics must be a float tensor (float32), got {numerics.dtype}")
        if self.num_cat:
            bad = (cat_ids < 0) | (cat_ids >= self.cardinalities)
            if bool(bad.any()):
                field = int(bad.any(dim=0).nonzero()[0, 0])
                value = int(cat_ids[:, field][bad[:, field]][0])
                raise ValueError(
                    f"cat_ids field {field}: id {value} outside [0, {self.cat_cardinalities[field]})"
                )

    def forward(self, cat_ids: torch.Tensor, numerics: torch.Tensor) -> torch.Tensor:
        self.check_inputs(cat_ids, numerics)
        parts = []
        if self.table is not None:
            parts.append(self.table(cat_ids.long() + self.offsets))
        if self.numeric_weight is not None:
            parts.append(numerics.unsqueeze(-1) * self.numeric_weight)
        return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]


class MLP(nn.Sequential):
    """Linear-ReLU-Dropout hidden layers, then an optional final Linear (no activation)."""

    def __init__(
        self, in_dim: int, hidden: Sequence[int], out_dim: int | None = None, dropout: float = 0.0
    ) -> None:
        layers: list[nn.Module] = []
        width = in_dim
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        if out_dim is not None:
            layers.append(nn.Linear(width, out_dim))
            width = out_dim
        super().__init__(*layers)
        self.out_dim = width


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(B, n, d) -> (B, h, n, d/h)."""
    return x.unflatten(-1, (num_heads, -1)).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, h, n, d/h) -> (B, n, d)."""
    return x.transpose(1, 2).flatten(2)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, head_dim: int) -> torch.Tensor:
    """softmax(Q K^T / sqrt(head_dim)) V, written out so it exports to plain ONNX ops (any opset >= 13).

    ``head_dim`` is passed as a Python int so tracing never turns a shape into a tensor.
    """
    scores = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(head_dim))
    return torch.matmul(F.softmax(scores, dim=-1), v)


def init_linear_weights(module: nn.Module) -> None:
    """Xavier-uniform weights and zero biases for every nn.Linear below ``module``."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
