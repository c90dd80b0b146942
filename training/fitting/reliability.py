"""Calibration of predicted probabilities: reliability table, expected calibration error, diagram.

``reliability_table`` bins predictions into ``bins`` equal-width bins on [0, 1] and
compares, per bin, the mean predicted probability with the observed click rate.
ECE = sum over bins of (rows in bin / rows) * |observed - mean predicted|
(the usual definition, Guo et al. 2017). Hand-rolled with numpy because
scikit-learn's ``calibration_curve`` drops empty bins and gives no counts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def reliability_table(y_true: np.ndarray, p: np.ndarray, bins: int = 10) -> dict[str, Any]:
    """{"ece", "bins": [{"lo", "hi", "rows", "mean_predicted", "observed"}], "rows", "mean_predicted", ...}."""
    y = np.asarray(y_true, dtype=np.float64).ravel()
    p = np.asarray(p, dtype=np.float64).ravel()
    if y.shape != p.shape or y.size == 0:
        raise ValueError(f"need as many labels as predictions, at least one ({y.size} vs {p.size})")
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1], right=True), 0, bins - 1)
    rows = np.bincount(which, minlength=bins)
    pred_sum = np.bincount(which, weights=p, minlength=bins)
    pos = np.bincount(which, weights=y, minlength=bins)
    table = []
    ece = 0.0
    for b in range(bins):
        n = int(rows[b])
        mean_p = float(pred_sum[b] / n) if n else None
        observed = float(pos[b] / n) if n else None
        if n:
            ece += n / y.size * abs(observed - mean_p)  # type: ignore[operator]
        table.append(
            {
                "lo": float(edges[b]),
                "hi": float(edges[b + 1]),
                "rows": n,
                "mean_predicted": mean_p,
                "observed": observed,
            }
        )
    return {
        "ece": float(ece),
        "rows": int(y.size),
        "mean_predicted": float(p.mean()),
        "observed": float(y.mean()),
        "bins": table,
    }


def plot_reliability(table: dict[str, Any], path: str | Path, title: str = "") -> None:
    """reliability.png: observed vs mean predicted per bin (diagonal = perfect), rows per bin below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    filled = [b for b in table["bins"] if b["rows"]]
    fig, (ax, ax_n) = plt.subplots(2, 1, figsize=(5, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    try:
        ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
        ax.plot(
            [b["mean_predicted"] for b in filled],
            [b["observed"] for b in filled],
            marker="o",
            label=f"model (ECE {table['ece']:.4f})",
        )
        ax.set_ylabel("observed click rate")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left")
        centers = [(b["lo"] + b["hi"]) / 2 for b in table["bins"]]
        width = table["bins"][0]["hi"] - table["bins"][0]["lo"]
        ax_n.bar(centers, [b["rows"] for b in table["bins"]], width=width * 0.9, color="tab:blue")
        ax_n.set_xlabel("predicted probability")
        ax_n.set_ylabel("rows")
        ax.set_title(title or "reliability diagram")
        fig.tight_layout()
        fig.savefig(path, dpi=80)
    finally:
        plt.close(fig)
