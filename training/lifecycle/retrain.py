"""The retraining job: train a candidate on new data, gate it against the served model, promote or refuse.

``retrain(...)`` (and ``python -m training.cli retrain``):

1. prepare the new data (split, vocab, statistics); with ``warm_start`` and a
   current bundle that has ``checkpoint.pt``, extend the current vocabulary
   instead (old ids kept, new values appended) and start from its weights
   (``training.lifecycle.warm_start``);
2. train and write the candidate bundle (plus ``checkpoint.pt`` for the next
   warm start); it is *not* CURRENT yet;
3. score candidate and current through onnxruntime on the same rows
   (``--eval-data`` or the candidate's validation split);
4. promote only if the field signatures match and candidate AUC >= current
   AUC - tolerance; write ``promotion.json`` next to the candidate either way.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from service.contract import load_schema, resolve_current
from training.bundle.checkpoint import load_checkpoint
from training.bundle.evaluate import space_from_bundle
from training.config import TrainConfig, apply_overrides, default_config
from training.data.dataset import PreparedData, Split, encode_file, prepare_data
from training.data.readers import iter_batches
from training.data.spec import DatasetSpec, resolve_spec
from training.lifecycle.promotion import Decision, compare_bundles, decide, now, promote, write_record
from training.lifecycle.warm_start import checkpoint_path, merge_space, signature, transfer_weights
from training.pipeline import InitFn, build_bundle, train_on
from training.recipes import Recipe, adhoc_recipe

log = logging.getLogger("training")


@dataclass
class RetrainOutcome:
    candidate: Path
    promoted: bool
    record: dict[str, Any]


def _reencode(prepared: PreparedData, data_path: Path, spec: DatasetSpec, space: Any) -> PreparedData:
    """Encode the same rows again with ``space`` (the merged warm-start vocabulary); splits unchanged."""
    if prepared.info.get("split") != "fraction":
        raise ValueError("retrain supports a single data file split by fraction")
    full = encode_file(data_path, spec, space, n_rows=len(prepared.train.arrays))
    test = Split(full, prepared.test.rows) if prepared.test is not None else None
    return dataclasses.replace(
        prepared,
        space=space,
        train=Split(full, prepared.train.rows),
        valid=Split(full, prepared.valid.rows),
        test=test,
    )


def _split_batches(path: Path, spec: DatasetSpec, rows: np.ndarray, n: int) -> Iterator[pa.RecordBatch]:
    """Stream only the given rows of a file (the validation split as an evaluation set)."""
    mask = np.zeros(n, dtype=bool)
    mask[rows] = True
    at = 0
    for batch in iter_batches(path, spec):
        keep = mask[at : at + batch.num_rows]
        at += batch.num_rows
        if keep.any():
            yield batch.filter(pa.array(keep))


def bundle_recipe(bundle_dir: Path | None) -> Recipe | None:
    """The recipe a bundle was trained with (its metrics.json ``recipe`` + ``config``), if recorded."""
    if bundle_dir is None or not (bundle_dir / "metrics.json").is_file():
        return None
    metrics = json.loads((bundle_dir / "metrics.json").read_text())
    if not isinstance(metrics.get("config"), dict):
        return None
    try:
        cfg = TrainConfig.from_dict(metrics["config"])
    except ValueError as e:  # written by an older trainer with settings this one no longer has
        log.warning("cannot rebuild the recipe of %s (%s); using the format default", bundle_dir.name, e)
        return None
    ref = metrics.get("recipe") or {}
    return Recipe(
        name=ref.get("name") or f"{bundle_dir.name}-config",
        version=ref.get("version") or 1,
        format=(metrics.get("data") or {}).get("format"),
        train=cfg,
        source=ref.get("source"),
    )


def resolve_config(
    current: Recipe | None, fmt: str, recipe: Recipe | None, overrides: dict[str, Any] | None
) -> tuple[TrainConfig, Recipe, str]:
    """What the candidate trains with: an explicit recipe, else CURRENT's, else the format default.

    ``overrides`` (non-None values) go on top. Returns (config, recipe it came from, why).
    """
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    if recipe is not None:
        base, why = recipe, "recipe given"
    elif current is not None:
        base, why = current, "reproduces CURRENT's recipe"
    else:
        cfg0 = default_config(fmt)
        base, why = adhoc_recipe(cfg0, fmt), "format default (no CURRENT)"
    cfg = apply_overrides(base.train, **given) if given else base.train
    return cfg, base, why + (f" with overrides {sorted(given)}" if given else "")


def _warm_init(old_net: Any, old_space: Any, space: Any) -> InitFn:
    """Warm-start hook: each exported network starts from the matching old one (members by index)."""
    inner = getattr(old_net, "net", old_net)  # TemperatureScaled -> its net
    olds = list(inner.members) if hasattr(inner, "members") else [inner]

    def init(net: Any, index: int | None) -> dict[str, Any]:
        return transfer_weights(olds[(index or 0) % len(olds)], old_space, net, space)

    return init


def retrain(
    data_path: str | Path,
    *,
    registry: str | Path,
    fmt: str = "csv",
    schema: str | Path | None = None,
    eval_data: str | Path | None = None,
    warm_start: bool = False,
    tolerance: float = 0.001,
    redis_url: str | None = None,
    prefix: str = "dlf:",
    channel: str | None = None,
    keep: int = 10,
    config: TrainConfig | None = None,
    recipe: Recipe | None = None,
    overrides: dict[str, Any] | None = None,
    valid_fraction: float = 0.1,
    split_seed: int = 2024,
    min_count: int | None = None,
    force_cpu: bool = False,
    progress: bool = False,
    recipe_format: str | None = None,
) -> RetrainOutcome:
    """Train a candidate, compare it with CURRENT on one evaluation set, promote it only if it passes.

    The candidate is trained with ``config`` / ``recipe`` when given, otherwise with the recipe that
    built CURRENT (same members, distillation, calibration, precision), so the gate compares like with
    like; ``overrides`` change single settings on top. promotion.json names both sides' recipes.
    """
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    data_path, registry = Path(data_path), Path(registry)
    started = now()
    current_version = resolve_current(registry)
    current_dir = registry / current_version if current_version else None
    current_recipe = bundle_recipe(current_dir)
    if config is not None:
        recipe = adhoc_recipe(config, fmt) if recipe is None else recipe.model_copy(update={"train": config})
    cfg, cand_recipe, why = resolve_config(current_recipe, recipe_format or fmt, recipe, overrides)
    log.info("candidate config: %s", why)
    spec = resolve_spec(fmt, schema, min_count)
    prepared = prepare_data(
        data_path, spec, valid_fraction=valid_fraction, split_seed=split_seed, progress=progress
    )
    warm: dict[str, Any] = {"requested": warm_start, "used": False}
    init: InitFn | None = None
    if warm_start and current_dir is None:
        warm["reason"] = "no current bundle"
    elif warm_start and current_dir is not None and not checkpoint_path(current_dir).exists():
        warm["reason"] = f"{current_version} has no {checkpoint_path(current_dir).name}"
    elif warm_start and current_dir is not None:
        old_net, old_cfg, _, _ = load_checkpoint(checkpoint_path(current_dir))
        old_space = space_from_bundle(current_dir)
        prepared = _reencode(prepared, data_path, spec, merge_space(old_space, prepared.space))
        # the architecture must be the old one for its weights to fit; optimisation settings stay ours
        arch = {k: getattr(old_cfg, k) for k in ("model", "preset", "model_overrides", "dropout", "distill")}
        cfg = cfg.replace(**arch)
        init = _warm_init(old_net, old_space, prepared.space)
        warm |= {"used": True, "from": current_version}
    if warm_start and init is None:
        log.warning("warm start not possible (%s); training from scratch", warm["reason"])

    result, metrics = train_on(
        prepared, cfg, force_cpu=force_cpu, progress=progress, init=init, recipe=cand_recipe
    )
    facts = metrics.pop("warm_start", None)
    if isinstance(facts, dict):
        warm |= facts
    elif facts:  # several exported networks (ensemble members): the first at top level, all listed
        warm |= {**facts[0], "per_network": facts}
    metrics["warm_start"] = warm
    metrics["config_source"] = why
    candidate = build_bundle(registry, prepared, cfg, result, metrics, extra={"retrained": True})

    batches: Callable[[], Any]
    if eval_data is not None:
        eval_source = str(eval_data)
        batches = lambda: iter_batches(eval_data, spec)  # noqa: E731
    else:
        eval_source = f"validation split of {data_path} ({len(prepared.valid)} rows)"
        n = len(prepared.valid.arrays)
        batches = lambda: _split_batches(data_path, spec, prepared.valid.rows, n)  # noqa: E731
    scores = compare_bundles(candidate, current_dir, batches)
    cand_sig = load_schema(candidate).signature()
    cur_sig = load_schema(current_dir).signature() if current_dir else cand_sig
    if cand_sig != cur_sig:
        decision = Decision(False, f"schema-incompatible with {current_version}: {cand_sig} != {cur_sig}")
    else:
        current_auc = scores["current"]["auc"] if "current" in scores else None
        decision = decide(scores["candidate"]["auc"], current_auc, tolerance)
    record: dict[str, Any] = {
        "candidate_version": candidate.name,
        "current_version": current_version,
        "candidate_recipe": {**metrics["recipe"], "structure": cfg.structure()},
        "current_recipe": (
            {**current_recipe.ref(), "structure": current_recipe.train.structure()}
            if current_recipe
            else None
        ),
        "config_source": why,
        "candidate_auc": scores["candidate"]["auc"],
        "current_auc": scores.get("current", {}).get("auc"),
        "candidate_logloss": scores["candidate"]["logloss"],
        "current_logloss": scores.get("current", {}).get("logloss"),
        "candidate_ece": scores["candidate"]["ece"],
        "current_ece": scores.get("current", {}).get("ece"),
        "eval_rows": scores["candidate"]["rows"],
        "eval_source": eval_source,
        "tolerance": tolerance,
        "decision": "promoted" if decision.promote else "refused",
        "reason": decision.reason,
        "warm_start": warm,
        "started_at": started,
        "decided_at": now(),
        "signature_matches": cand_sig == cur_sig,
        "fields": [list(s) for s in signature(prepared.space)],
    }
    write_record(candidate, record)
    if decision.promote:
        record |= promote(registry, candidate, redis_url=redis_url, prefix=prefix, channel=channel, keep=keep)
        write_record(candidate, record)
    log.info("retrain %s: %s (%s)", candidate.name, record["decision"], record["reason"])
    return RetrainOutcome(candidate, decision.promote, record)
