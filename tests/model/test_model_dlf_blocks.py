"""DLF structure: the low-order block reads X0, the high-order one does not; ablations remove parameters."""

from __future__ import annotations

import pytest
import torch
from model_testutils import random_batch, tiny_config

from model import build_model
from model.dlf import DLF, DLFLayer


def _layer_inputs(net: DLF) -> tuple[DLFLayer, torch.Tensor, torch.Tensor]:
    """The second layer with its real input X (output of layer 1) and X0."""
    cat_ids, numerics = random_batch([5, 7, 3], 2, batch=8)
    x0 = net.embedding(cat_ids, numerics)
    x = net.layers[0](x0, x0)
    return net.layers[1], x, x0


@torch.no_grad()
def test_low_order_block_reads_x0_and_high_order_block_does_not() -> None:
    net = build_model("dlf", [5, 7, 3], 2, tiny_config(), seed=0).eval()
    layer, x, x0 = _layer_inputs(net)
    other_x0 = torch.randn_like(x0)

    lo_a, lo_b = layer.low_order(x, x0), layer.low_order(x, other_x0)
    assert lo_a.shape == (8, net.config.num_tokens, net.config.embedding_dim)
    assert not torch.allclose(lo_a, lo_b)

    lo1, hi1, im1 = layer.blocks(x, x0)
    lo2, hi2, im2 = layer.blocks(x, other_x0)
    assert not torch.allclose(lo1, lo2)
    assert torch.equal(hi1, hi2)
    assert torch.equal(im1, im2)
    assert not torch.allclose(layer(x, x0), layer(x, other_x0))  # X0 reaches the layer output


@torch.no_grad()
def test_high_order_block_interacts_x_with_itself() -> None:
    """Z = X (X^T W): scaling X by c scales Z by c^2, which LayerNorm then removes; a shift does not cancel."""
    net = build_model("dlf", [5, 7, 3], 2, tiny_config(), seed=0).eval()
    layer, x, _ = _layer_inputs(net)
    block = layer.high_order
    z = torch.matmul(x, torch.matmul(x.transpose(1, 2), block.weight))
    manual = block.mlp(block.norm(z.flatten(1))).unflatten(1, (block.num_tokens, block.dim))
    torch.testing.assert_close(block(x), manual)
    torch.testing.assert_close(block(3.0 * x), block(x), rtol=1e-4, atol=1e-4)
    assert not torch.allclose(block(x + 1.0), block(x), atol=1e-3)


def test_without_rli_the_low_order_block_does_not_exist() -> None:
    full = build_model("dlf", [5, 7, 3], 2, tiny_config(), seed=0)
    no_rli = build_model("dlf", [5, 7, 3], 2, tiny_config(use_rli=False), seed=0)
    assert any("low_order" in n for n, _ in full.named_parameters())
    assert not any("low_order" in n for n, _ in no_rli.named_parameters())
    assert not any("low_order" in n for n, _ in no_rli.named_modules())
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(no_rli) < count(full)
    assert len(no_rli.layers[0].naf.steps[0].qkv) == 2  # NAF over {hi, im} only


def test_ablation_switches_remove_their_parameters() -> None:
    no_gate = build_model("dlf", [5, 7], 0, tiny_config(use_gate=False), seed=0)
    no_naf = build_model("dlf", [5, 7], 0, tiny_config(use_naf=False), seed=0)
    assert not any(n.endswith(".gate") for n, _ in no_gate.named_parameters())
    assert not any(".naf." in n for n, _ in no_naf.named_parameters())
    assert all(layer.naf is None for layer in no_naf.layers)


@torch.no_grad()
def test_gate_off_means_plain_residual() -> None:
    net = build_model("dlf", [5, 7, 3], 2, tiny_config(use_gate=False), seed=0).eval()
    layer, x, x0 = _layer_inputs(net)
    raw = layer.blocks(x, x0)
    h = torch.cat([*layer.naf(raw), *raw], dim=1)
    r = x if layer.residual is None else layer.residual(x)
    torch.testing.assert_close(layer(x, x0), layer.norm(h + r))


@pytest.mark.parametrize(("num_fields", "needs_projection"), [(12, False), (5, True)])
def test_residual_projection_only_when_token_count_changes(num_fields: int, needs_projection: bool) -> None:
    cfg = tiny_config(num_tokens=2)  # 6k = 12 tokens per layer
    net = build_model("dlf", [3] * num_fields, 0, cfg, seed=0)
    assert (net.layers[0].residual is not None) is needs_projection
    assert net.layers[1].residual is None  # 6k -> 6k after the first layer
