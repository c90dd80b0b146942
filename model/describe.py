"""Model size and cost: parameter count and multiply-adds per sample, measured with FlopCounterMode."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


@dataclass(frozen=True)
class ModelDescription:
    """``macs_per_sample`` counts matmul-family ops only (what dominates); lookups and elementwise ops are free."""

    model: str
    params: int
    macs_per_sample: float


def describe(net: nn.Module, num_cat: int, num_numeric: int, batch_size: int = 8) -> ModelDescription:
    """Count trainable parameters and run one eval-mode forward on a dummy batch under FlopCounterMode."""
    params = sum(p.numel() for p in net.parameters() if p.requires_grad)
    device = next(net.parameters()).device
    cat_ids = torch.zeros(batch_size, num_cat, dtype=torch.long, device=device)
    numerics = torch.zeros(batch_size, num_numeric, dtype=torch.float32, device=device)
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            net(cat_ids, numerics)
    finally:
        net.train(was_training)
    return ModelDescription(
        model=type(net).__name__,
        params=params,
        macs_per_sample=counter.get_total_flops() / 2 / batch_size,
    )
