"""Baseline internals: the FM identity, both DCNv2 structures, Wukong token counts."""

from __future__ import annotations

import itertools

import pytest
import torch
from model_testutils import random_batch, tiny_config

from model import ProbabilityModel, build_model
from model.fm import fm_interaction


def test_fm_interaction_equals_the_sum_over_pairs() -> None:
    x = torch.randn(4, 5, 3, generator=torch.Generator().manual_seed(0))
    brute = sum((x[:, i] * x[:, j]).sum(-1) for i, j in itertools.combinations(range(5), 2))
    torch.testing.assert_close(fm_interaction(x), brute)


@pytest.mark.parametrize("structure", ["parallel", "stacked"])
def test_dcnv2_structures(structure: str) -> None:
    cfg = tiny_config(dcn_structure=structure)
    net = build_model("dcnv2", [5, 7], 2, cfg, seed=0)
    width = 4 * cfg.embedding_dim
    expected_in = cfg.dnn_hidden[-1] + (0 if structure == "stacked" else width)
    assert net.out.in_features == expected_in
    cat_ids, numerics = random_batch([5, 7], 2, batch=6)
    logits = net(cat_ids, numerics)
    assert logits.shape == (6,) and torch.isfinite(logits).all()
    logits.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


def test_cross_layer_is_x0_times_linear_plus_residual() -> None:
    net = build_model("dcnv2", [5, 7], 0, tiny_config(cross_layers=1), seed=0)
    x0 = torch.randn(3, 2 * net.config.embedding_dim)
    layer = net.cross.layers[0]
    torch.testing.assert_close(net.cross(x0), x0 * layer(x0) + x0)


def test_wukong_layers_emit_fmb_plus_lcb_tokens() -> None:
    cfg = tiny_config(num_emb_fmb=4, num_emb_lcb=2)
    net = build_model("wukong", [5, 7, 3], 1, cfg, seed=0)
    cat_ids, numerics = random_batch([5, 7, 3], 1, batch=5)
    x = net.embedding(cat_ids, numerics)
    for layer in net.layers:
        x = layer(x)
        assert x.shape == (5, 6, cfg.embedding_dim)


def test_probability_wrapper_is_sigmoid_of_logits() -> None:
    net = build_model("fm", [5, 7], 1, tiny_config(), seed=0)
    cat_ids, numerics = random_batch([5, 7], 1, batch=4)
    torch.testing.assert_close(
        ProbabilityModel(net)(cat_ids, numerics), torch.sigmoid(net(cat_ids, numerics))
    )
