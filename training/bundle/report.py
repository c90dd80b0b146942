"""report.png: training loss and valid AUC / logloss per evaluation (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_report(history: list[dict[str, float]], path: str | Path, title: str = "") -> None:
    """Two panels: train loss + valid logloss, and valid AUC, against epoch."""
    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_auc) = plt.subplots(1, 2, figsize=(10, 4))
    try:
        ax_loss.plot(epochs, [h["train_loss"] for h in history], marker="o", label="train loss")
        ax_loss.plot(epochs, [h["valid_logloss"] for h in history], marker="o", label="valid logloss")
        ax_loss.set_xlabel("epoch")
        ax_loss.set_ylabel("logloss")
        ax_loss.legend()
        ax_loss.grid(alpha=0.3)
        ax_auc.plot(epochs, [h["valid_auc"] for h in history], marker="o", color="tab:green")
        ax_auc.set_xlabel("epoch")
        ax_auc.set_ylabel("valid AUC")
        ax_auc.grid(alpha=0.3)
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        fig.savefig(path, dpi=80)
    finally:
        plt.close(fig)
