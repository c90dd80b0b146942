"""bench/load_client.py's summary: where in a run the slow answers were, and how late requests left."""

from __future__ import annotations

import pytest

from bench.load_client import Record, summarise


def test_timeline_splits_a_run_by_start_time_and_keeps_503s_out_of_the_p99() -> None:
    record = Record()
    for i in range(10):  # first half second: slow 200s (an overload's onset)
        record.add(0.05 * i, 80.0, 200)
    for i in range(10):  # second: fast 200s and 503s that must not count in the 200s' p99
        record.add(0.5 + 0.05 * i, 10.0, 200 if i % 2 else 503)
    for i in range(20):  # the load client itself fell behind once, in the second half second
        record.late(0.05 * i, 5.0 if i == 15 else 0.1)
    summary = summarise(record, rows_per_request=100, wall_s=1.0)
    first, second = summary["timeline"][:2]
    assert (first["from_s"], first["requests"], first["ok"], first["status_503"]) == (0.0, 10, 10, 0)
    assert first["p99_ms"] == pytest.approx(80.0)
    assert (second["requests"], second["ok"], second["status_503"]) == (10, 5, 5)
    assert second["p99_ms"] == pytest.approx(10.0)
    assert (first["send_lag_max_ms"], second["send_lag_max_ms"]) == pytest.approx((0.1, 5.0))
    assert summary["send_lag_p50_ms"] == pytest.approx(0.1)
    assert summary["send_lag_p99_ms"] > 1.0


def test_a_closed_loop_run_has_no_send_lag() -> None:
    record = Record()
    record.add(0.0, 1.0, 200)
    summary = summarise(record, rows_per_request=1, wall_s=1.0)
    assert summary["send_lag_p50_ms"] is None and len(summary["timeline"]) >= 1
    assert summary["timeline"][0]["send_lag_max_ms"] is None


def test_a_finer_timeline_step_splits_the_same_run_into_more_slices() -> None:
    record = Record()
    for i in range(10):
        record.add(0.1 * i, 50.0 if i < 2 else 10.0, 200)  # only the first 0.2 s is slow
    fine = summarise(record, rows_per_request=1, wall_s=1.0, step_s=0.1)["timeline"]
    assert len(fine) == 10 and [b["requests"] for b in fine] == [1] * 10
    assert [b["p99_ms"] for b in fine[:3]] == pytest.approx([50.0, 50.0, 10.0])
    coarse = summarise(record, rows_per_request=1, wall_s=1.0)["timeline"]  # 0.5 s by default
    assert [b["requests"] for b in coarse[:2]] == [5, 5]


def test_the_summary_lists_the_slowest_answers_with_the_runs_start_on_the_monotonic_clock() -> None:
    record = Record()
    for i in range(2000):  # a quarter are 503s: 1 % of the 1500 answered is the 15 slowest
        record.add(i * 0.001, float(i % 500), 200 if i % 4 else 503)
    summary = summarise(record, rows_per_request=1, wall_s=2.0, t0=123.5)
    slowest = summary["slowest_ok"]
    assert summary["t0"] == 123.5 and len(slowest) == 15
    assert [ms for _, ms in slowest] == sorted((ms for _, ms in slowest), reverse=True)
    assert slowest[0] == [pytest.approx(0.499), 499.0]  # the first of the four requests at 499 ms
    assert all(ms >= 495 and round(start * 1000) % 4 for start, ms in slowest)


def test_a_short_run_still_lists_ten_slowest_answers() -> None:
    record = Record()
    for i in range(30):
        record.add(i * 0.01, float(i), 200)
    assert [ms for _, ms in summarise(record, rows_per_request=1, wall_s=1.0)["slowest_ok"]] == list(
        map(float, range(29, 19, -1))
    )
