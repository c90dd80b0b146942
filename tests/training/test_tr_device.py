"""Device / AMP choice (both branches, on CPU by passing the facts in), torchrun env, config checks."""

from __future__ import annotations

import pytest
import torch

from training.config import TrainConfig, default_config
from training.fitting.device import DistInfo, dist_info_from_env, select_device
from training.recipes import load_recipe


def test_cuda_branch_uses_amp_bf16_when_supported() -> None:
    c = select_device(cuda_available=True, bf16_supported=True)
    assert (c.device, c.amp, c.dtype, c.use_grad_scaler) == ("cuda", True, torch.bfloat16, False)


def test_cuda_branch_fp16_needs_grad_scaler() -> None:
    c = select_device(cuda_available=True, bf16_supported=False, local_rank=1)
    assert (c.device, c.amp, c.dtype, c.use_grad_scaler) == ("cuda:1", True, torch.float16, True)


def test_cuda_branch_amp_can_be_turned_off() -> None:
    c = select_device(cuda_available=True, bf16_supported=True, amp=False)
    assert (c.device, c.amp, c.dtype) == ("cuda", False, torch.float32)


def test_cpu_branch_never_uses_amp() -> None:
    for choice in (select_device(cuda_available=False, amp=True), select_device(True, True, force_cpu=True)):
        assert (choice.device, choice.amp, choice.dtype, choice.use_grad_scaler) == (
            "cpu",
            False,
            torch.float32,
            False,
        )


def test_dist_info_from_env() -> None:
    assert dist_info_from_env({}) == DistInfo(1, 0, 0)
    assert not dist_info_from_env({}).enabled
    info = dist_info_from_env({"WORLD_SIZE": "4", "RANK": "2", "LOCAL_RANK": "0"})
    assert info.enabled and not info.is_main and info.world_size == 4
    with pytest.raises(ValueError, match="inconsistent torchrun"):
        dist_info_from_env({"WORLD_SIZE": "2", "RANK": "5"})


def test_train_config_validation_and_model_config() -> None:
    with pytest.raises(ValueError, match="lr"):
        TrainConfig(lr=-1)
    with pytest.raises(ValueError, match="no_such_field"):
        TrainConfig(no_such_field=1)
    cfg = TrainConfig(model_overrides={"use_rli": False}, dropout=0.25)
    mc = cfg.network_config()
    assert mc.use_rli is False and mc.dropout == 0.25
    with pytest.raises(ValueError, match="unknown model setting"):
        TrainConfig(model_overrides={"no_such_knob": 1}).network_config()
    d = cfg.to_dict()
    assert d["model_config"]["use_rli"] is False
    assert TrainConfig.from_dict(d) == cfg


def test_frappe_defaults_apply_only_to_frappe() -> None:
    recipe = load_recipe("frappe")
    frappe = default_config("frappe")
    assert frappe == recipe.train and recipe.source and recipe.source.endswith("frappe.yaml")
    assert default_config("frappe", lr=0.5).lr == 0.5
    assert default_config("csv") == TrainConfig()
    merged = default_config("frappe", model_overrides={"use_gate": False})
    assert merged.model_overrides == {**recipe.train.model_overrides, "use_gate": False}
    assert default_config("frappe", preset="paper").model_overrides == {}
    assert default_config("frappe", precision="int8").export.precision == "int8"
