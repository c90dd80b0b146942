"""A planted pairwise XOR: DLF learns it, LR (no interactions) cannot."""

from __future__ import annotations

import torch
from model_testutils import tiny_config
from sklearn.metrics import roc_auc_score

from model import build_model

CARDS = [3, 3, 6, 6, 6]  # a, b (ids 1/2, 0 = OOV unused) + three noise fields
NUM_NUMERIC = 1  # one noise numeric field


def xor_data(rows: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    a = torch.randint(0, 2, (rows,), generator=gen)
    b = torch.randint(0, 2, (rows,), generator=gen)
    noise = torch.randint(1, 6, (rows, 3), generator=gen)
    cat_ids = torch.cat([(a + 1)[:, None], (b + 1)[:, None], noise], dim=1)
    numerics = torch.randn(rows, NUM_NUMERIC, generator=gen)
    flip = torch.rand(rows, generator=gen) < 0.05
    labels = ((a ^ b).bool() ^ flip).float()
    return cat_ids, numerics, labels


def train_and_score(name: str, steps: int = 150, seed: int = 0) -> float:
    net = build_model(name, CARDS, NUM_NUMERIC, tiny_config(), seed=seed)
    cat_ids, numerics, labels = xor_data(3000, seed=1)
    optimiser = torch.optim.Adam(net.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(2)
    net.train()
    for _ in range(steps):
        idx = torch.randint(0, len(labels), (128,), generator=gen)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            net(cat_ids[idx], numerics[idx]), labels[idx]
        )
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    test_ids, test_num, test_labels = xor_data(1000, seed=3)
    net.eval()
    with torch.no_grad():
        scores = torch.sigmoid(net(test_ids, test_num))
    return float(roc_auc_score(test_labels.numpy(), scores.numpy()))


def test_dlf_learns_the_planted_interaction() -> None:
    assert train_and_score("dlf") > 0.9  # ceiling with 5 % label noise is about 0.95


def test_lr_stays_at_chance() -> None:
    assert train_and_score("lr") < 0.6
