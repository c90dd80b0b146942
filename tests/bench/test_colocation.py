"""bench/colocation.py: neighbours keep their schedule and work; rounds and comparisons add up."""

from __future__ import annotations

import time

import pytest

from bench.colocation import Round, Side, compare, neighbour, summarise_round


def test_a_neighbour_wakes_on_schedule_and_spends_its_work_each_time() -> None:
    side = neighbour(seconds=0.5, wakeups=200.0, work_us=500.0, start_at=time.time())
    assert side.wall_s >= 0.5
    # a late wake-up skips the ticks it missed, so never more than the schedule, and on a busy CI
    # machine not far fewer
    assert 50 <= side.wakeups <= 102
    assert side.cpu_s >= 0.9 * side.wakeups * 500e-6
    assert side.rows == 0


def test_a_round_sums_the_sessions_and_averages_the_neighbours_wakeups() -> None:
    sessions = [Side(cpu_s=1.0, wall_s=2.0, rows=10_000), Side(cpu_s=1.5, wall_s=2.5, rows=20_000)]
    others = [Side(cpu_s=0.2, wall_s=2.0, wakeups=800), Side(cpu_s=0.4, wall_s=2.0, wakeups=600)]
    r = summarise_round(2, sessions, others)
    assert r.rows_per_s == pytest.approx(30_000 / 2.5)
    assert r.cpu_us_per_row == pytest.approx(2.5 / 30_000 * 1e6)
    assert r.session_cores == pytest.approx(1.0)
    assert r.neighbour_cores == pytest.approx(0.1 + 0.2)
    assert r.wakeups_per_s == pytest.approx(350.0)
    assert r.per_session_rows_per_s == [pytest.approx(5_000.0), pytest.approx(8_000.0)]
    assert summarise_round(0, sessions, []).wakeups_per_s == 0.0


def test_compare_takes_medians_and_the_cost_ratio_per_row() -> None:
    def rnd(n: int, us: float) -> Round:
        return summarise_round(n, [Side(cpu_s=us * 1e-6 * 1000, wall_s=1.0, rows=1000)], [])

    rounds = [rnd(0, 75.0), rnd(2, 81.0), rnd(0, 76.0), rnd(2, 80.0), rnd(0, 90.0), rnd(2, 79.0)]
    out = compare(rounds)
    assert out["alone"]["cpu_us_per_row"] == pytest.approx(76.0)
    assert out["beside"]["cpu_us_per_row"] == pytest.approx(80.0)
    assert out["cpu_per_row_ratio"] == pytest.approx(80.0 / 76.0)
    with pytest.raises(ValueError):
        compare([r for r in rounds if r.neighbours == 0])
