"""bench/serving_engine.py: the ceiling of a request size is the mean of the runs around its cells."""

from __future__ import annotations

from bench.serving_engine import around


def test_the_ceiling_is_the_mean_of_the_runs_before_and_after_and_keeps_both() -> None:
    c = around({"rows_per_s": 10_000.0, "procs": 2}, {"rows_per_s": 14_000.0, "procs": 2})
    assert c == {"rows_per_s": 12_000.0, "before": 10_000.0, "after": 14_000.0, "procs": 2}
