"""Post-hoc temperature calibration: one T > 0 minimising logloss of sigmoid(logit / T).

Checkpoints are chosen by valid AUC, which tends to pick a slightly over-confident epoch; a single
temperature fixes the probabilities without touching the ranking, so AUC is unchanged.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import minimize_scalar
from scipy.special import expit
from torch import nn

from training.data.dataset import Split
from training.fitting.device import DeviceChoice
from training.fitting.metrics import PROB_EPS

LOG_T_BOUNDS = (-4.0, 4.0)  # T in [0.018, 55]: wide enough for any sane net, keeps the search finite


def _logloss(logits: np.ndarray, y: np.ndarray, temperature: float) -> float:
    p = np.clip(expit(logits / temperature), PROB_EPS, 1.0 - PROB_EPS)
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log1p(-p)))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """T minimising the (clipped) logloss of sigmoid(logits / T) over ``labels`` (bounded search on log T)."""
    z = np.asarray(logits, dtype=np.float64).ravel()
    y = np.asarray(labels, dtype=np.float64).ravel()
    if z.shape != y.shape or z.size == 0:
        raise ValueError(f"logits ({z.size}) and labels ({y.size}) must be non-empty and equal in length")
    if not np.isfinite(z).all():
        raise ValueError("logits contain NaN or inf")
    res = minimize_scalar(
        lambda s: _logloss(z, y, float(np.exp(s))),
        bounds=LOG_T_BOUNDS,
        method="bounded",
        options={"xatol": 1e-5},
    )
    t = float(np.exp(res.x))
    return t if _logloss(z, y, t) <= _logloss(z, y, 1.0) else 1.0  # never worse than no calibration


def predict_logits(net: nn.Module, split: Split, choice: DeviceChoice, batch_size: int = 8192) -> np.ndarray:
    """Raw logits for every row of ``split`` (float64), in eval mode."""
    net.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(split), batch_size):
            cat, num, _ = split.take(np.arange(start, min(start + batch_size, len(split))))
            logits = net(torch.from_numpy(cat).to(choice.device), torch.from_numpy(num).to(choice.device))
            out.append(logits.float().cpu().numpy())
    return np.concatenate(out).astype(np.float64) if out else np.zeros(0)
