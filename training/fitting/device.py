"""Where training runs: device + mixed precision choice, and torchrun/DDP setup.

``select_device`` is a pure function of what the machine offers, so both branches
(CUDA + AMP, CPU fp32) are testable on a CPU-only box by passing the facts in.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class DeviceChoice:
    device: str  # "cuda", "cuda:<rank>" or "cpu"
    amp: bool  # run forward/backward under torch.autocast
    dtype: torch.dtype  # autocast dtype (float32 when amp is off)

    @property
    def use_grad_scaler(self) -> bool:
        """fp16 needs loss scaling; bf16 has fp32's exponent range and does not."""
        return self.amp and self.dtype == torch.float16


def select_device(
    cuda_available: bool | None = None,
    bf16_supported: bool | None = None,
    *,
    local_rank: int | None = None,
    force_cpu: bool = False,
    amp: bool | None = None,
) -> DeviceChoice:
    """CUDA with AMP (bf16 where supported, else fp16 + GradScaler) when a GPU is present, CPU fp32 otherwise.

    ``None`` arguments are filled in from the running machine; pass them explicitly to test.
    ``amp=False`` turns mixed precision off on GPU; AMP is never used on CPU.
    """
    if cuda_available is None:
        cuda_available = torch.cuda.is_available()
    if force_cpu or not cuda_available:
        return DeviceChoice("cpu", False, torch.float32)
    if bf16_supported is None:
        bf16_supported = torch.cuda.is_bf16_supported()
    device = "cuda" if local_rank is None else f"cuda:{local_rank}"
    if amp is False:
        return DeviceChoice(device, False, torch.float32)
    return DeviceChoice(device, True, torch.bfloat16 if bf16_supported else torch.float16)


@dataclass(frozen=True)
class DistInfo:
    world_size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_info_from_env(env: dict[str, str] | None = None) -> DistInfo:
    """Read torchrun's WORLD_SIZE / RANK / LOCAL_RANK (single process when absent)."""
    env = dict(os.environ) if env is None else env
    try:
        world = int(env.get("WORLD_SIZE", "1"))
        rank = int(env.get("RANK", "0"))
        local = int(env.get("LOCAL_RANK", "0"))
    except ValueError as e:
        raise ValueError(f"WORLD_SIZE/RANK/LOCAL_RANK must be integers: {e}") from e
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"inconsistent torchrun environment: WORLD_SIZE={world} RANK={rank}")
    return DistInfo(world, rank, local)


def init_distributed(info: DistInfo, choice: DeviceChoice) -> None:
    """Join the torchrun process group (nccl on GPU, gloo on CPU); no-op for one process."""
    if not info.enabled or torch.distributed.is_initialized():
        return
    if choice.device.startswith("cuda"):
        torch.cuda.set_device(info.local_rank)
    torch.distributed.init_process_group(backend="nccl" if choice.device.startswith("cuda") else "gloo")


def seed_everything(seed: int) -> None:
    """Fix python, numpy and torch RNGs (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
