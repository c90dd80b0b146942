"""Warm start from the served bundle: keep its ids, append new values, copy the matching weights.

Bundles hold ONNX (for serving) and, when written by ``retrain``, the torch
weights in ``checkpoint.pt`` (``pipeline.save_checkpoint`` format, loaded with
``weights_only=True``). Warm start needs that checkpoint:

* vocabulary: every value of the old bundle keeps its id; values new in the
  data (above the field's min count) are appended after them, so the old rows of
  the concatenated embedding table stay meaningful;
* numeric fields keep the old normalisation (mean/std/fill), which the old
  numeric weights were trained with;
* weights: a tensor with the same name and shape is copied; an embedding table
  that grew (rows = sum of cardinalities) gets each field's old rows copied to
  that field's new offset, new rows keep their fresh initialisation; anything
  else (a changed architecture) keeps its initialisation and is listed as skipped.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from training.data.vocab import FeatureSpace

CHECKPOINT_FILE = "checkpoint.pt"


def signature(space: FeatureSpace) -> list[tuple[str, str]]:
    """(name, kind) in field order: must match ``BundleSchema.signature`` of the served bundle."""
    return [(f.name, f.kind) for f in space.fields]


def merge_space(old: FeatureSpace, new: FeatureSpace) -> FeatureSpace:
    """Old vocab (same ids) + values only the new data has, appended; old numeric statistics."""
    if signature(old) != signature(new):
        raise ValueError(
            f"warm start needs the same fields: bundle has {signature(old)}, data has {signature(new)}"
        )
    old_by_name = {f.name: f for f in old.fields}
    fields = []
    vocabs: dict[str, list[str]] = {}
    for f in new.fields:
        prev = old_by_name[f.name]
        if f.kind == "categorical":
            known = list(old.vocabs[f.name])
            seen = set(known)
            vocab = known + [v for v in new.vocabs[f.name] if v not in seen]
            vocabs[f.name] = vocab
            fields.append(dataclasses.replace(prev, vocab_size=len(vocab) + 1))
        else:
            fields.append(prev)
    return FeatureSpace(fields=fields, vocabs=vocabs, label=new.label)


def _offsets(cards: list[int]) -> list[int]:
    return [0, *np.cumsum(cards)[:-1].tolist()] if cards else []


def transfer_weights(
    old_net: nn.Module, old_space: FeatureSpace, new_net: nn.Module, new_space: FeatureSpace
) -> dict[str, Any]:
    """Copy ``old_net``'s weights into ``new_net`` (see module doc); returns what was copied/remapped/skipped."""
    old_sd = old_net.state_dict()
    new_sd = new_net.state_dict()
    old_cards, new_cards = old_space.cardinalities, new_space.cardinalities
    if any(n < o for o, n in zip(old_cards, new_cards, strict=True)):
        raise ValueError(f"warm start cannot shrink a vocabulary: {old_cards} -> {new_cards}")
    old_off, new_off = _offsets(old_cards), _offsets(new_cards)
    copied, remapped, skipped = [], [], []
    for name, target in new_sd.items():
        source = old_sd.get(name)
        if source is None:
            skipped.append(name)
        elif source.shape == target.shape:
            new_sd[name] = source.clone()
            copied.append(name)
        elif (
            source.dim() >= 1
            and source.shape[1:] == target.shape[1:]
            and source.shape[0] == sum(old_cards)
            and target.shape[0] == sum(new_cards)
        ):
            grown = target.clone()
            for j, card in enumerate(old_cards):
                grown[new_off[j] : new_off[j] + card] = source[old_off[j] : old_off[j] + card]
            new_sd[name] = grown
            remapped.append(name)
        else:
            skipped.append(name)
    new_net.load_state_dict(new_sd)
    return {
        "copied": len(copied),
        "remapped_embedding_tables": remapped,
        "skipped": skipped,
        "new_ids": {
            f.name: n - o
            for f, o, n in zip(new_space.categorical, old_cards, new_cards, strict=True)
            if n != o
        },
    }


def checkpoint_path(bundle_dir: str | Path) -> Path:
    return Path(bundle_dir) / CHECKPOINT_FILE
