"""Every model and every DLF ablation maps any mix of field kinds to finite logits of shape [B]."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from model_testutils import ABLATIONS, ablation_id, random_batch, tiny_config

from model import MODEL_NAMES, build_model


def _check_output(logits: torch.Tensor, batch: int) -> None:
    assert logits.shape == (batch,)
    assert logits.dtype == torch.float32
    assert torch.isfinite(logits).all()
    p = torch.sigmoid(logits)
    assert ((p > 0) & (p < 1)).all()


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_model_outputs_one_logit_per_row(name: str, input_case: tuple[list[int], int]) -> None:
    cards, num_numeric = input_case
    net = build_model(name, cards, num_numeric, tiny_config(), seed=0)
    cat_ids, numerics = random_batch(cards, num_numeric, batch=9)
    _check_output(net(cat_ids, numerics), 9)


@pytest.mark.parametrize("flags", ABLATIONS, ids=ablation_id)
def test_every_dlf_ablation_outputs_one_logit_per_row(
    flags: dict[str, bool], input_case: tuple[list[int], int]
) -> None:
    cards, num_numeric = input_case
    net = build_model("dlf", cards, num_numeric, tiny_config(**flags), seed=0)
    cat_ids, numerics = random_batch(cards, num_numeric, batch=6)
    _check_output(net(cat_ids, numerics), 6)


@pytest.mark.parametrize("flags", ABLATIONS, ids=ablation_id)
def test_dlf_layer_token_count_follows_the_spec(flags: dict[str, bool]) -> None:
    cfg = tiny_config(**flags)
    k = cfg.num_tokens
    blocks = 3 if cfg.use_rli else 2
    expected = k * blocks * (2 if cfg.use_naf else 1)  # 6k, 4k, 3k or 2k tokens
    net = build_model("dlf", [5, 7], 1, cfg, seed=0)
    cat_ids, numerics = random_batch([5, 7], 1, batch=4)
    x0 = net.embedding(cat_ids, numerics)
    x = x0
    for layer in net.layers:
        assert layer.num_out == expected
        x = layer(x, x0)
        assert x.shape == (4, expected, cfg.embedding_dim)


def test_single_row_and_eval_mode_with_dropout() -> None:
    cfg = dataclasses.replace(tiny_config(), dropout=0.5, embedding_dropout=0.2)
    net = build_model("dlf", [5, 7], 2, cfg, seed=0).eval()
    cat_ids, numerics = random_batch([5, 7], 2, batch=1)
    first = net(cat_ids, numerics)
    _check_output(first, 1)
    assert torch.equal(first, net(cat_ids, numerics))  # eval mode: dropout off, deterministic
