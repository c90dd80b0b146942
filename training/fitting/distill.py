"""Cross-fitting for distillation: which train rows each teacher member may see.

A member's logits on rows it was trained on say little beyond the labels (it fits them), so with
``cross_fit`` member k is trained without fold k and scores only fold k: every train row gets a
teacher logit from a member that never saw it. The members' average on valid is the teacher's
score; the folds cost nothing extra (each member sees (K-1)/K of the rows).
"""

from __future__ import annotations

import numpy as np

from training.data.dataset import Split

FOLD_SEED = 7  # fixed: fold membership is part of the recipe, not of the member seeds


def fold_ids(n: int, k: int, seed: int = FOLD_SEED) -> np.ndarray:
    """Balanced fold id in [0, k) for each of ``n`` train positions."""
    if k < 2:
        raise ValueError(f"cross-fitting needs at least 2 folds, got {k}")
    return np.random.default_rng(seed).permutation(n) % k


def subset(split: Split, positions: np.ndarray) -> Split:
    """The rows at ``positions`` (0..len-1) of ``split`` as a split of the same arrays."""
    rows = positions if split.rows is None else split.rows[positions]
    return Split(split.arrays, np.asarray(rows))
