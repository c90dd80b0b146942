"""Helpers for tests/model: tiny configs, input cases and random batches (unique name: no package clash)."""

from __future__ import annotations

import dataclasses
import itertools

import torch

from model import ModelConfig, preset

torch.set_num_threads(1)

# (cat_cardinalities, num_numeric): both kinds, categorical only, numeric only
INPUT_CASES = {
    "cat+num": ([5, 7, 3, 4], 2),
    "cat-only": ([5, 7, 3, 4], 0),
    "num-only": ([], 3),
}
ABLATIONS = [dict(use_gate=g, use_rli=r, use_naf=n) for g, r, n in itertools.product([True, False], repeat=3)]


def ablation_id(flags: dict[str, bool]) -> str:
    return "-".join(f"{k[4:]}{int(v)}" for k, v in flags.items())


def tiny_config(**changes: object) -> ModelConfig:
    """The small preset shrunk further so every test stays well under a second."""
    cfg = dataclasses.replace(
        preset("small"),
        embedding_dim=8,
        num_layers=2,
        num_tokens=3,
        rank=4,
        block_hidden=16,
        head_hidden=16,
        num_heads=2,
        dnn_hidden=(16, 8),
        num_emb_lcb=3,
        num_emb_fmb=3,
        rank_fmb=4,
        cross_layers=2,
    )
    return dataclasses.replace(cfg, **changes)


def random_batch(
    cards: list[int], num_numeric: int, batch: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ids cover every row of every field (row i uses id i mod card) so all embedding rows get gradient."""
    gen = torch.Generator().manual_seed(seed)
    if cards:
        cols = [torch.randperm(batch, generator=gen) % c for c in cards]
        cat_ids = torch.stack(cols, dim=1)
    else:
        cat_ids = torch.zeros(batch, 0, dtype=torch.long)
    numerics = torch.randn(batch, num_numeric, generator=gen)
    return cat_ids, numerics
