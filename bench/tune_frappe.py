"""Hyper-parameter search for DLF on the Frappe valid split (README protocol); appends to a JSONL.

Usage: python bench/tune_frappe.py STAGE [THREADS]  (see GRIDS below). Results: runs/tune-frappe-STAGE.jsonl.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bench.bench_quality import BenchRow, frappe_data, run_row  # noqa: E402
from training.config import TrainConfig  # noqa: E402

BASE = dict(model="dlf", preset="small", epochs=12, patience=2, eval_every=0.5)

E = dict(eval_every=1.0, epochs=24)
GRIDS: dict[str, list[dict]] = {
    "r8a": [dict(embedding_l2=0.1, dropout=0.3, epochs=20, model_overrides={"embedding_dim": 32})],
    "r8b": [dict(embedding_l2=0.05, dropout=0.2, epochs=20, model_overrides={"embedding_dim": 32})],
    "r7a": [dict(embedding_l2=0.05, dropout=0.4, epochs=20, model_overrides={"embedding_dim": 32})],
    "r6a": [dict(embedding_l2=0.05, dropout=0.3, epochs=20, model_overrides={"embedding_dim": 64})],
    "r5a": [dict(embedding_l2=0.05, dropout=0.3, plateau_factor=0.3, patience=3, **E)],
    "r5b": [dict(embedding_l2=0.05, dropout=0.3, epochs=20, model_overrides={"embedding_dim": 32})],
    "r4a": [
        dict(embedding_l2=0.05, dropout=0.4, **E),
        dict(embedding_l2=0.05, dropout=0.3, plateau_factor=0.3, **E),
        dict(embedding_l2=0.1, dropout=0.4, **E),
    ],
    "r4b": [
        dict(embedding_l2=0.05, dropout=0.5, **E),
        dict(embedding_l2=0.05, dropout=0.4, model_overrides={"embedding_dropout": 0.1}, **E),
        dict(embedding_l2=0.05, dropout=0.4, plateau_factor=0.3, plateau_restore=True, **E),
    ],
    "l2": [
        dict(embedding_l2=l2, dropout=dp, batch_size=bs, lr=lr)
        for (l2, dp, bs, lr) in [
            (0.0, 0.0, 1024, 1e-3),
            (1e-2, 0.1, 1024, 1e-3),
            (5e-2, 0.1, 1024, 1e-3),
            (1e-2, 0.2, 512, 1e-3),
            (3e-3, 0.2, 512, 1e-3),
            (5e-2, 0.2, 512, 3e-3),
        ]
    ],
}


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    stage = sys.argv[1]
    torch.set_num_threads(int(sys.argv[2]) if len(sys.argv) > 2 else 1)
    data = frappe_data(Path(__file__).resolve().parents[2] / "shared/data/frappe/frappe.dev.libfm")
    out = Path(f"runs/tune-frappe-{stage}.jsonl")
    out.parent.mkdir(parents=True, exist_ok=True)
    for kw in GRIDS[stage]:
        row = BenchRow(f"{stage}:{kw}", TrainConfig(**(BASE | kw)), "tune")
        (r,) = run_row(data, row, out.parent)
        with out.open("a") as fh:
            fh.write(json.dumps(r, default=str) + "\n")
        print(f"{r['name']:70s} AUC {r['valid_auc']:.4f} LL {r['valid_logloss']:.4f} ep {r['best_epoch']}/{r['epochs']}",
              flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
