"""describe() counts parameters and multiply-adds; the CLI prints them per preset."""

from __future__ import annotations

import re

from model_testutils import tiny_config
from typer.testing import CliRunner

from model import build_model, describe, preset
from model.cli import app


def _expected_dlf_macs(num_fields: int, cfg: object) -> int:
    """Hand count of the spec's matmuls (per sample) to cross-check FlopCounterMode."""
    d, k, r, h, hh = cfg.embedding_dim, cfg.num_tokens, cfg.rank, cfg.block_hidden, cfg.head_hidden
    nb = 3 if cfg.use_rli else 2
    n, total = num_fields, 0
    for _ in range(cfg.num_layers):
        if cfg.use_rli:
            total += n * d * r + num_fields * d * r + num_fields * r * h + h * k * d
        total += 2 * n * d * r + n * r * h + h * k * d  # high-order
        total += n * d * h + h * k * d  # implicit
        n_out = k * nb * (2 if cfg.use_naf else 1)
        if cfg.use_naf:
            per_step = nb * (k * d * 3 * d)  # Q, K, V
            per_step += nb * 2 * (k * (nb - 1) * k * d)  # cross: scores + weighted values
            per_step += nb * 2 * (k * k * d)  # self
            per_step += nb * (k * 2 * d * d)  # W_O
            total += cfg.naf_layers * per_step
        if n != n_out:
            total += n * n_out * d  # token projection P
        n = n_out
    return total + n * d * hh + hh


def test_describe_counts_params_and_macs_like_the_spec() -> None:
    for cfg in (tiny_config(), tiny_config(use_rli=False, use_naf=False), preset("small")):
        net = build_model("dlf", [5, 7, 3], 2, cfg, seed=0)
        info = describe(net, 3, 2)
        assert info.model == "DLF"
        assert info.params == sum(p.numel() for p in net.parameters())
        assert info.macs_per_sample == _expected_dlf_macs(5, cfg)
    assert net.training  # describe restores the mode


def test_paper_preset_costs_match_the_spec_estimate() -> None:
    frappe = [958, 4083, 8, 8, 4, 4, 3, 10, 81, 234]
    paper = describe(build_model("dlf", frappe, 0, preset("paper"), seed=0), 10, 0)
    small = describe(build_model("dlf", frappe, 0, preset("small"), seed=0), 10, 0)
    assert 60e6 < paper.macs_per_sample < 85e6  # the spec: roughly 71 M
    assert 40e6 < paper.params < 60e6
    assert small.macs_per_sample < paper.macs_per_sample / 50


def test_lr_has_no_multiply_adds() -> None:
    info = describe(build_model("lr", [5, 7], 1, tiny_config(), seed=0), 2, 1)
    assert info.macs_per_sample == 0
    assert info.params == 5 + 7 + 1 + 1


def test_cli_describe_prints_each_preset() -> None:
    runner = CliRunner()
    result = runner.invoke(
        app, ["describe", "--preset", "small", "--cardinalities", "5,7,3", "--num-numeric", "2"]
    )
    assert result.exit_code == 0, result.output
    expected = describe(build_model("dlf", [5, 7, 3], 2, preset("small"), seed=0), 3, 2)
    line = next(ln for ln in result.output.splitlines() if ln.startswith("small"))
    params, macs = (int(v.replace(",", "")) for v in re.findall(r"[\d,]+", line))
    assert (params, macs) == (expected.params, round(expected.macs_per_sample))
    assert "paper" not in result.output

    both = runner.invoke(app, ["describe", "--cardinalities", "5,7"])
    assert both.exit_code == 0
    assert re.search(r"^paper\s", both.output, re.M) and re.search(r"^small\s", both.output, re.M)

    bad = runner.invoke(app, ["describe", "--model", "nope"])
    assert bad.exit_code != 0
    assert "known models" in bad.output
