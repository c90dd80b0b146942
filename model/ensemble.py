"""Logit-level wrappers with the CTR forward signature: a seed ensemble and a fitted temperature.

Both return logits, so they export through the same probability wrapper as a single net and the
bundle's ``probability`` output stays sigmoid(final logit).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class LogitAverage(nn.Module):
    """Mean of the members' logits: averaging seeds cancels part of each member's variance (AUC gain)."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if len(members) < 1:
            raise ValueError("LogitAverage needs at least one member")
        self.members = nn.ModuleList(members)

    def forward(self, cat_ids: torch.Tensor, numerics: torch.Tensor) -> torch.Tensor:
        """LongTensor [B, F_cat], FloatTensor [B, F_num] -> mean logits [B]."""
        return torch.stack([m(cat_ids, numerics) for m in self.members], dim=0).mean(dim=0)


class TemperatureScaled(nn.Module):
    """``net(x) / T``: post-hoc calibration that leaves the ranking (AUC) unchanged.

    T is a buffer, so it travels in the state dict and is folded into the exported graph.
    """

    def __init__(self, net: nn.Module, temperature: float = 1.0) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        self.net = net
        self.register_buffer("temperature", torch.tensor(float(temperature), dtype=torch.float32))

    def forward(self, cat_ids: torch.Tensor, numerics: torch.Tensor) -> torch.Tensor:
        return self.net(cat_ids, numerics) / self.temperature
