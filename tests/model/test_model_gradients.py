"""One backward pass reaches every parameter of every model and every DLF ablation."""

from __future__ import annotations

import pytest
import torch
from model_testutils import ABLATIONS, ablation_id, random_batch, tiny_config
from torch import nn

from model import MODEL_NAMES, build_model


def _assert_all_params_get_gradient(net: nn.Module, cards: list[int], num_numeric: int) -> None:
    cat_ids, numerics = random_batch(cards, num_numeric, batch=16)
    labels = torch.randint(0, 2, (16,), generator=torch.Generator().manual_seed(1)).float()
    loss = nn.functional.binary_cross_entropy_with_logits(net(cat_ids, numerics), labels)
    loss.backward()
    missing = [n for n, p in net.named_parameters() if p.requires_grad and p.grad is None]
    zero = [n for n, p in net.named_parameters() if p.grad is not None and not p.grad.abs().sum() > 0]
    assert not missing, f"no gradient for {missing}"
    assert not zero, f"all-zero gradient for {zero}"


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_gradient_reaches_every_parameter(name: str, input_case: tuple[list[int], int]) -> None:
    cards, num_numeric = input_case
    net = build_model(name, cards, num_numeric, tiny_config(), seed=0)
    _assert_all_params_get_gradient(net, cards, num_numeric)


@pytest.mark.parametrize("flags", ABLATIONS, ids=ablation_id)
def test_gradient_reaches_every_dlf_block(flags: dict[str, bool]) -> None:
    cards, num_numeric = [5, 7, 3], 2
    net = build_model("dlf", cards, num_numeric, tiny_config(**flags), seed=0)
    names = {n for n, _ in net.named_parameters()}
    expected_parts = ["embedding.table", "embedding.numeric_weight", "high_order", "implicit", "head", "norm"]
    expected_parts += ["low_order"] if flags["use_rli"] else []
    expected_parts += ["naf.steps"] if flags["use_naf"] else []
    expected_parts += ["gate"] if flags["use_gate"] else []
    for part in expected_parts:
        assert any(part in n for n in names), f"{part} missing from {sorted(names)}"
    _assert_all_params_get_gradient(net, cards, num_numeric)


def test_every_embedding_row_gets_gradient() -> None:
    cards = [5, 7, 3]
    net = build_model("dlf", cards, 0, tiny_config(), seed=0)
    _assert_all_params_get_gradient(net, cards, 0)
    row_grad = net.embedding.table.weight.grad.abs().sum(dim=1)
    assert (row_grad > 0).all()  # including each field's OOV row 0
