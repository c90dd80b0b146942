"""Presets, config validation, the registry and input validation."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from model_testutils import tiny_config

from model import MODEL_NAMES, ModelConfig, build_model, preset


def test_presets_are_fresh_and_match_the_paper_setting() -> None:
    paper = preset("paper")
    assert (paper.embedding_dim, paper.num_layers, paper.num_tokens, paper.rank) == (64, 8, 16, 24)
    assert (paper.block_hidden, paper.head_hidden, paper.naf_layers) == (512, 512, 2)
    assert preset("small") == preset("small")
    assert preset("small") is not preset("small")
    assert preset("small").embedding_dim < paper.embedding_dim
    with pytest.raises(ValueError, match="known presets: paper, small"):
        preset("huge")


def test_config_round_trips_through_a_plain_dict() -> None:
    cfg = dataclasses.replace(preset("paper"), use_naf=False, dnn_hidden=(7, 3))
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown ModelConfig field"):
        ModelConfig.from_dict({"embeding_dim": 4})


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        (dict(embedding_dim=0), "embedding_dim"),
        (dict(num_tokens=-1), "num_tokens"),
        (dict(dropout=1.0), "dropout"),
        (dict(embedding_dim=10, num_heads=3), "num_heads"),
        (dict(dcn_structure="diagonal"), "dcn_structure"),
        (dict(dnn_hidden=(8, 0)), "dnn_hidden"),
    ],
)
def test_bad_config_names_the_field(changes: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        dataclasses.replace(preset("small"), **changes)


def test_registry_names_and_unknown_model() -> None:
    assert MODEL_NAMES == ("dlf", "lr", "fm", "deepfm", "dcnv2", "wukong")
    with pytest.raises(ValueError, match="known models: dlf, lr, fm, deepfm, dcnv2, wukong"):
        build_model("pnn", [3], 0, tiny_config())


@pytest.mark.parametrize(
    ("cards", "num_numeric", "message"),
    [([], 0, "at least one"), ([3, 0], 1, r"cat_cardinalities\[1\]"), ([3], -1, "num_numeric")],
)
def test_bad_field_layout_is_rejected(cards: list[int], num_numeric: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_model("dlf", cards, num_numeric, tiny_config())


def test_bad_inputs_name_the_problem() -> None:
    net = build_model("dlf", [3, 4], 1, tiny_config(), seed=0)
    good_ids, good_num = torch.tensor([[0, 3], [2, 1]]), torch.zeros(2, 1)
    assert net(good_ids, good_num).shape == (2,)
    with pytest.raises(ValueError, match=r"cat_ids field 1: id 4 outside \[0, 4\)"):
        net(torch.tensor([[0, 4], [1, 1]]), good_num)
    with pytest.raises(ValueError, match="cat_ids field 0: id -1"):
        net(torch.tensor([[-1, 0], [1, 1]]), good_num)
    with pytest.raises(ValueError, match=r"numerics must have shape \[B, 1\]"):
        net(good_ids, torch.zeros(2, 2))
    with pytest.raises(ValueError, match=r"cat_ids must have shape \[B, 2\]"):
        net(good_ids[:, :1], good_num)
    with pytest.raises(ValueError, match="batch sizes differ"):
        net(good_ids, torch.zeros(3, 1))
    with pytest.raises(ValueError, match="integer"):
        net(good_ids.float(), good_num)
