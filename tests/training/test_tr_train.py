"""Single-process training on synthetic data: sane AUC, early stopping, best weights, determinism."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

from training.config import TrainConfig
from training.data.dataset import prepare_data, split_rows
from training.data.spec import resolve_spec
from training.data.synthetic import SyntheticFiles, synthetic_table
from training.fitting.device import select_device
from training.fitting.trainer import evaluate, fit
from training.pipeline import build_net, train_on


@pytest.fixture(scope="module")
def data(synthetic_csv: SyntheticFiles):  # type: ignore[no-untyped-def]
    return prepare_data(
        synthetic_csv.data, resolve_spec("csv", synthetic_csv.schema), valid_fraction=0.2, split_seed=1
    )


def test_split_follows_the_frappe_protocol() -> None:
    tr, va, te = split_rows(57722, 0.1, 0.0, 2024)
    perm = np.random.default_rng(2024).permutation(57722)
    assert len(tr) == 51949 and len(va) == 5773 and len(te) == 0
    assert (tr == perm[:51949]).all() and (va == perm[51949:]).all()
    tr, va, te = split_rows(100, 0.1, 0.2, 0)
    assert (len(tr), len(va), len(te)) == (70, 10, 20)
    with pytest.raises(ValueError, match="bad split"):
        split_rows(10, 0.0, 0.0, 0)


def test_training_reaches_a_sane_auc(data, tiny_cfg: Callable[..., TrainConfig]) -> None:  # type: ignore[no-untyped-def]
    result, metrics = train_on(data, tiny_cfg(epochs=4, patience=4, lr=1e-2))
    base_rate = float(data.train.labels().mean())
    constant_logloss = -(base_rate * np.log(base_rate) + (1 - base_rate) * np.log(1 - base_rate))
    assert metrics["valid"]["auc"] > 0.66, metrics["valid"]  # planted signal (oracle ~0.8); random = 0.5
    assert metrics["valid"]["logloss"] < constant_logloss  # better than predicting the base rate
    assert metrics["device"] == "cpu" and metrics["amp"] is None and metrics["params"] > 0
    # history is per evaluation, the best is what the returned net scores
    assert len(result.history) == 4 and result.best["auc"] == max(h["valid_auc"] for h in result.history)
    again = evaluate(result.net, data.valid, select_device(cuda_available=False))
    assert again["auc"] == pytest.approx(metrics["valid"]["auc"], abs=1e-6)


def test_early_stopping_keeps_best_weights(data, tiny_cfg: Callable[..., TrainConfig]) -> None:  # type: ignore[no-untyped-def]
    # a high learning rate with no regularisation overfits the small train split quickly
    cfg = tiny_cfg(epochs=30, patience=0, lr=3e-2, eval_every=0.5)
    result, _ = train_on(data, cfg)
    assert result.stopped_early and result.epochs_run < 30
    assert result.history[-1]["valid_auc"] <= result.best["auc"]
    cpu = select_device(cuda_available=False)
    assert evaluate(result.net, data.valid, cpu)["auc"] == pytest.approx(result.best["auc"], abs=1e-6)


def test_seeded_runs_are_identical(data, tiny_cfg: Callable[..., TrainConfig]) -> None:  # type: ignore[no-untyped-def]
    cfg = tiny_cfg(epochs=1, model="fm")
    cpu = select_device(cuda_available=False)
    a = fit(build_net(cfg, data.space), data.train, data.valid, cfg, cpu)
    b = fit(build_net(cfg, data.space), data.train, data.valid, cfg, cpu)
    assert a.best["auc"] == b.best["auc"] and a.history[0]["train_loss"] == b.history[0]["train_loss"]


def test_embedding_l2_shrinks_embeddings(data, tiny_cfg: Callable[..., TrainConfig]) -> None:  # type: ignore[no-untyped-def]
    from training.fitting.trainer import embedding_params

    cpu = select_device(cuda_available=False)
    norms = []
    for l2 in (0.0, 1.0):
        cfg = tiny_cfg(epochs=1, model="fm", embedding_l2=l2, lr=1e-2)
        net = fit(build_net(cfg, data.space), data.train, data.valid, cfg, cpu).net
        norms.append(sum(float(p.detach().norm()) for p in embedding_params(net)))
    assert norms[1] < 0.5 * norms[0]


def test_synthetic_is_deterministic() -> None:
    a, b = synthetic_table(500, seed=7), synthetic_table(500, seed=7)
    assert a.equals(b)
    assert not a.equals(synthetic_table(500, seed=8))
    assert 0.1 < np.mean(a.column("click").to_numpy()) < 0.9


def test_plateau_lowers_the_learning_rate(data, tiny_cfg: Callable[..., TrainConfig]) -> None:  # type: ignore[no-untyped-def]
    cfg = tiny_cfg(model="lr", epochs=6, patience=20, lr=0.2, eval_every=0.5, plateau_factor=0.5)
    result = fit(build_net(cfg, data.space), data.train, data.valid, cfg, select_device(cuda_available=False))
    aucs = [h["valid_auc"] for h in result.history]
    misses = sum(1 for i in range(1, len(aucs)) if aucs[i] <= max(aucs[:i]))
    assert misses >= 1  # lr 0.2 on a linear model does not improve every half epoch
    assert result.extra["final_lr"] == pytest.approx(0.2 * 0.5**misses)


def test_weight_ema_is_what_gets_scored_and_kept(data, tiny_cfg: Callable[..., TrainConfig]) -> None:  # type: ignore[no-untyped-def]
    """With ema_decay the averaged weights are evaluated, early-stopped on and returned (not the raw ones)."""
    cpu = select_device(cuda_available=False)
    plain, _ = train_on(data, tiny_cfg(epochs=2, patience=2, lr=1e-2))
    ema, metrics = train_on(data, tiny_cfg(epochs=2, patience=2, lr=1e-2, ema_decay=0.9))
    assert metrics["config"]["ema_decay"] == 0.9
    assert evaluate(ema.net, data.valid, cpu)["auc"] == pytest.approx(ema.best["auc"], abs=1e-6)
    # same seed and data order: only the averaging differs, so the kept weights differ
    w_plain = next(iter(plain.net.state_dict().values()))
    w_ema = next(iter(ema.net.state_dict().values()))
    assert not torch.equal(w_plain, w_ema)


def test_a_run_too_short_for_its_ema_says_so(data, tiny_cfg: Callable[..., TrainConfig], caplog) -> None:  # type: ignore[no-untyped-def]
    cpu = select_device(cuda_available=False)
    with caplog.at_level("WARNING", logger="training"):
        cfg = tiny_cfg(epochs=1, patience=0, ema_decay=0.999)
        fit(build_net(cfg, data.space), data.train, data.valid, cfg, cpu)
    assert any("keeps" in r.message and "initial weights" in r.message for r in caplog.records)
    caplog.clear()
    with caplog.at_level("WARNING", logger="training"):
        cfg = tiny_cfg(epochs=1, patience=0, ema_decay=0.5)
        fit(build_net(cfg, data.space), data.train, data.valid, cfg, cpu)
    assert not any("initial weights" in r.message for r in caplog.records)
