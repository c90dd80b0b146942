"""Same seed -> identical parameters and outputs; a different seed -> different ones."""

from __future__ import annotations

import pytest
import torch
from model_testutils import random_batch, tiny_config

from model import MODEL_NAMES, build_model


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_same_seed_same_model(name: str) -> None:
    cards, num_numeric = [5, 7, 3], 2
    cat_ids, numerics = random_batch(cards, num_numeric, batch=8)
    a = build_model(name, cards, num_numeric, tiny_config(), seed=123)
    b = build_model(name, cards, num_numeric, tiny_config(), seed=123)
    c = build_model(name, cards, num_numeric, tiny_config(), seed=124)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    assert torch.equal(a(cat_ids, numerics), b(cat_ids, numerics))
    assert not torch.equal(a(cat_ids, numerics), c(cat_ids, numerics))


def test_global_seed_also_reproduces_and_seed_argument_leaves_global_rng_alone() -> None:
    cat_ids, numerics = random_batch([5, 7], 1, batch=4)
    torch.manual_seed(7)
    a = build_model("dlf", [5, 7], 1, tiny_config())
    torch.manual_seed(7)
    b = build_model("dlf", [5, 7], 1, tiny_config())
    assert torch.equal(a(cat_ids, numerics), b(cat_ids, numerics))

    torch.manual_seed(11)
    expected = torch.rand(3)
    torch.manual_seed(11)
    build_model("dlf", [5, 7], 1, tiny_config(), seed=0)
    assert torch.equal(torch.rand(3), expected)
