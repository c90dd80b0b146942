"""One rank of the 2-rank DDP test (started by torchrun from test_tr_ddp.py).

Every rank builds the same tiny data set and model (same seed), trains with
``training.trainer.fit`` under torchrun's environment (gloo on CPU) and saves
its final weights plus the rows it trained on, for the test to compare.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from model import build_model
from training.config import TrainConfig
from training.data.dataset import Arrays, Split
from training.fitting.device import dist_info_from_env, init_distributed, select_device
from training.fitting.trainer import _Order, fit

TINY = {"embedding_dim": 4, "num_layers": 1, "num_tokens": 2, "rank": 2, "block_hidden": 8, "head_hidden": 8}


def tiny_data(rows: int = 512, seed: int = 0) -> Arrays:
    rng = np.random.default_rng(seed)
    cat = rng.integers(1, 20, size=(rows, 2)).astype(np.int64)
    num = rng.normal(size=(rows, 1)).astype(np.float32)
    y = ((cat[:, 0] % 3 == 0) ^ (num[:, 0] > 0.5)).astype(np.float32)
    return Arrays(cat=cat, num=num, y=y)


def main(out_dir: Path) -> None:
    dist = dist_info_from_env()
    assert dist.enabled and dist.world_size == 2, dist
    choice = select_device(force_cpu=True)
    init_distributed(dist, choice)
    assert torch.distributed.get_backend() == "gloo"
    data = tiny_data()
    train, valid = Split(data, np.arange(0, 384)), Split(data, np.arange(384, 512))
    cfg = TrainConfig(model="dlf", model_overrides=TINY, epochs=3, batch_size=32, patience=5, seed=7)
    torch.manual_seed(cfg.seed)
    net = build_model("dlf", cat_cardinalities=[20, 20], num_numeric=1, config=cfg.network_config())
    initial = {k: v.detach().clone() for k, v in net.state_dict().items()}
    result = fit(net, train, valid, cfg, choice, dist)
    torch.save(
        {
            "rank": dist.rank,
            "initial": initial,
            "final": result.net.state_dict(),
            "rows_epoch0": _Order(len(train), dist, cfg.seed).epoch(0).tolist(),
            "history": result.history,
        },
        out_dir / f"rank{dist.rank}.pt",
    )
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
