"""AUC and logloss with scikit-learn (the numbers the bundle and docs/quality.md report)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import log_loss, roc_auc_score

PROB_EPS = 1e-7  # probabilities are clipped to [eps, 1 - eps] before logloss (FuxiCTR does the same)


def auc_logloss(y_true: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """{"auc", "logloss", "rows"}; a split with a single class has no AUC and is an error."""
    y = np.asarray(y_true, dtype=np.float64).ravel()
    p = np.asarray(p, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"labels ({y.shape[0]}) and predictions ({p.shape[0]}) differ in length")
    if not np.isfinite(p).all():
        raise ValueError("predictions contain NaN or inf (training diverged?)")
    classes = np.unique(y)
    if classes.size < 2:
        raise ValueError(f"cannot compute AUC: every label is {classes.tolist()} (need both 0 and 1)")
    p = np.clip(p, PROB_EPS, 1.0 - PROB_EPS)
    return {
        "auc": float(roc_auc_score(y, p)),
        "logloss": float(log_loss(y, p, labels=[0.0, 1.0])),
        "rows": int(y.size),
    }
