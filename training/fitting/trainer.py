"""The training loop: Adam + BCE-with-logits, embedding L2, early stopping on valid, best weights kept.

Runs single-process on CPU or GPU (AMP chosen by ``device.select_device``), or as one
rank of a torchrun job (DistributedDataParallel + DistributedSampler when
WORLD_SIZE > 1). Every rank evaluates the full valid split, so all ranks take the
same early-stopping decision without extra communication.
"""

from __future__ import annotations

import logging
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DistributedSampler
from tqdm import tqdm

from training.config import DistillConfig, TrainConfig
from training.data.dataset import Split
from training.fitting.device import DeviceChoice, DistInfo
from training.fitting.metrics import auc_logloss

log = logging.getLogger("training")


@dataclass
class FitResult:
    """Best-weights model (on CPU, eval mode) and the per-evaluation history."""

    net: nn.Module
    history: list[dict[str, float]]
    best: dict[str, float]
    epochs_run: float
    seconds_per_epoch: float
    samples_per_second: float
    device: str
    stopped_early: bool
    extra: dict[str, Any] = field(default_factory=dict)
    teacher: nn.Module | None = None  # the teacher ensemble of a distilled run (not exported)


def _autocast(choice: DeviceChoice) -> Any:
    if not choice.amp:
        return nullcontext()
    return torch.autocast(device_type="cuda", dtype=choice.dtype)


def predict(net: nn.Module, split: Split, choice: DeviceChoice, batch_size: int = 8192) -> np.ndarray:
    """Click probabilities for every row of ``split`` (float64)."""
    net.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(split), batch_size):
            cat, num, _ = split.take(np.arange(start, min(start + batch_size, len(split))))
            with _autocast(choice):
                logits = net(torch.from_numpy(cat).to(choice.device), torch.from_numpy(num).to(choice.device))
            out.append(torch.sigmoid(logits.float()).cpu().numpy())
    return np.concatenate(out).astype(np.float64) if out else np.zeros(0)


def evaluate(net: nn.Module, split: Split, choice: DeviceChoice, batch_size: int = 8192) -> dict[str, float]:
    return auc_logloss(split.labels(), predict(net, split, choice, batch_size))


def embedding_params(net: nn.Module) -> list[nn.Parameter]:
    """Weights of every nn.Embedding: these get the explicit embedding L2, not weight decay."""
    return [m.weight for m in net.modules() if isinstance(m, nn.Embedding)]


def _improved(metrics: dict[str, float], best: dict[str, float] | None, monitor: str) -> bool:
    if best is None:
        return True
    if monitor == "auc":
        return metrics["auc"] > best["auc"]
    return metrics["logloss"] < best["logloss"]


class _Order:
    """Per-epoch example order: seeded permutation, or DistributedSampler's shard under DDP."""

    def __init__(self, n: int, dist: DistInfo, seed: int) -> None:
        self.n, self.dist, self.seed = n, dist, seed
        self.sampler = (
            DistributedSampler(
                range(n), num_replicas=dist.world_size, rank=dist.rank, shuffle=True, seed=seed
            )
            if dist.enabled
            else None
        )

    def epoch(self, e: int) -> np.ndarray:
        if self.sampler is not None:
            self.sampler.set_epoch(e)
            return np.fromiter(iter(self.sampler), dtype=np.int64)
        g = torch.Generator().manual_seed(self.seed + e)
        return torch.randperm(self.n, generator=g).numpy()


def fit(
    net: nn.Module,
    train: Split,
    valid: Split,
    cfg: TrainConfig,
    choice: DeviceChoice,
    dist: DistInfo | None = None,
    *,
    teacher_logits: np.ndarray | None = None,
    distill: DistillConfig | None = None,
    progress: bool = False,
) -> FitResult:
    """Train ``net`` and return it with the best valid weights loaded (criterion ``cfg.monitor``).

    ``teacher_logits`` (one per train row, in split order) switch on knowledge distillation: the loss
    becomes ``alpha * BCE(s, y) + (1 - alpha) * tau^2 * BCE(s / tau, sigmoid(t / tau))``.
    With ``cfg.ema_decay`` an exponential moving average of the weights is what gets evaluated,
    early-stopped and returned.
    """
    dist = dist or DistInfo()
    if len(train) == 0 or len(valid) == 0:
        raise ValueError(f"empty split: train has {len(train)} rows, valid has {len(valid)}")
    teacher = None if teacher_logits is None else np.asarray(teacher_logits, dtype=np.float32)
    if teacher is not None and distill is None:
        distill = DistillConfig()
    if teacher is not None and teacher.shape != (len(train),):
        raise ValueError(f"teacher_logits has shape {teacher.shape}, expected ({len(train)},)")
    net = net.to(choice.device)
    # parameters only: the models' buffers are integer id offsets/cardinalities, never to be averaged
    ema = (
        torch.optim.swa_utils.AveragedModel(
            net, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=False
        )
        if cfg.ema_decay is not None
        else None
    )
    scored: nn.Module = ema.module if ema is not None else net
    emb = embedding_params(net)
    emb_ids = {id(p) for p in emb}
    rest = [p for p in net.parameters() if id(p) not in emb_ids]
    opt = torch.optim.Adam(
        [{"params": emb, "weight_decay": 0.0}, {"params": rest, "weight_decay": cfg.weight_decay}], lr=cfg.lr
    )
    model: nn.Module = net
    if dist.enabled:
        ids = [dist.local_rank] if choice.device.startswith("cuda") else None
        model = nn.parallel.DistributedDataParallel(net, device_ids=ids)
    scaler = torch.amp.GradScaler("cuda", enabled=choice.use_grad_scaler)
    order = _Order(len(train), dist, cfg.seed)
    evals_per_epoch = max(1, round(1.0 / cfg.eval_every))

    history: list[dict[str, float]] = []
    best: dict[str, float] | None = None
    best_state: dict[str, torch.Tensor] | None = None
    bad_evals, stop, train_seconds, seen = 0, False, 0.0, 0
    epoch = 0
    for epoch in range(cfg.epochs):
        perm = order.epoch(epoch)
        chunks = np.array_split(perm, evals_per_epoch)
        for part_i, chunk in enumerate(chunks):
            model.train()
            t0 = time.perf_counter()
            loss_sum, loss_n = 0.0, 0
            steps = math.ceil(len(chunk) / cfg.batch_size)
            bar = tqdm(
                total=steps, desc=f"epoch {epoch + 1}", disable=not (progress and dist.is_main), leave=False
            )
            for s in range(steps):
                pos = np.sort(chunk[s * cfg.batch_size : (s + 1) * cfg.batch_size])
                cat, num, y = train.take(pos)
                cat_t = torch.from_numpy(cat).to(choice.device, non_blocking=True)
                num_t = torch.from_numpy(num).to(choice.device, non_blocking=True)
                y_t = torch.from_numpy(y).to(choice.device, non_blocking=True)
                with _autocast(choice):
                    logits = model(cat_t, num_t)
                loss = F.binary_cross_entropy_with_logits(logits.float(), y_t)
                if teacher is not None:
                    tau = distill.temperature
                    t_t = torch.from_numpy(teacher[pos]).to(choice.device, non_blocking=True)
                    soft = F.binary_cross_entropy_with_logits(logits.float() / tau, torch.sigmoid(t_t / tau))
                    loss = distill.alpha * loss + (1.0 - distill.alpha) * tau * tau * soft
                total = loss
                if cfg.embedding_l2 > 0 and emb:
                    total = total + 0.5 * cfg.embedding_l2 * sum(p.float().pow(2).sum() for p in emb)
                opt.zero_grad(set_to_none=True)
                scaler.scale(total).backward()
                if cfg.grad_clip:
                    scaler.unscale_(opt)
                    nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
                scaler.step(opt)
                scaler.update()
                if ema is not None:
                    ema.update_parameters(net)
                loss_sum += float(loss.detach()) * len(y)
                loss_n += len(y)
                bar.update()
            bar.close()
            if not math.isfinite(loss_sum):
                raise FloatingPointError(
                    f"training loss became {loss_sum} in epoch {epoch + 1} (lower --lr?)"
                )
            train_seconds += time.perf_counter() - t0
            seen += loss_n
            metrics = evaluate(scored, valid, choice, cfg.eval_batch_size)
            rec = {
                "epoch": round(epoch + (part_i + 1) / evals_per_epoch, 4),
                "train_loss": loss_sum / max(loss_n, 1),
                "valid_auc": metrics["auc"],
                "valid_logloss": metrics["logloss"],
                "train_seconds": train_seconds,
            }
            history.append(rec)
            if dist.is_main:
                log.info(
                    "epoch %.2f train_loss %.4f valid_auc %.4f valid_logloss %.4f (%.1fs)",
                    rec["epoch"],
                    rec["train_loss"],
                    rec["valid_auc"],
                    rec["valid_logloss"],
                    train_seconds,
                )
            if _improved(metrics, best, cfg.monitor):
                best = {"epoch": rec["epoch"], **metrics}
                best_state = {k: v.detach().to("cpu", copy=True) for k, v in scored.state_dict().items()}
                bad_evals = 0
            else:
                bad_evals += 1
                if bad_evals > cfg.patience:
                    stop = True
                    break
                if cfg.plateau_restore and best_state is not None:
                    net.load_state_dict(best_state)
                for group in opt.param_groups:
                    group["lr"] *= cfg.plateau_factor
        if stop:
            break
    assert best is not None and best_state is not None
    if ema is not None:
        steps = int(seen / max(cfg.batch_size, 1))
        early = cfg.ema_decay**steps if cfg.ema_decay is not None else 0.0
        if early > 0.05 and dist.is_main:  # a short run: the average still holds the initial weights
            log.warning(
                "ema_decay %.4f over %d steps keeps %.0f%% of the initial weights in the exported average;"
                " train longer or lower ema_decay (0 = off)",
                cfg.ema_decay,
                steps,
                100 * early,
            )
    net.load_state_dict(best_state)
    net = net.to("cpu").eval()
    epochs_run = history[-1]["epoch"]
    return FitResult(
        net=net,
        history=history,
        best=best,
        epochs_run=epochs_run,
        seconds_per_epoch=train_seconds / max(epochs_run, 1e-9),
        samples_per_second=seen * dist.world_size / max(train_seconds, 1e-9),
        device=choice.device,
        stopped_early=stop,
        extra={
            "optimizer": "adam",
            "evals_per_epoch": evals_per_epoch,
            "final_lr": opt.param_groups[0]["lr"],
        },
    )
