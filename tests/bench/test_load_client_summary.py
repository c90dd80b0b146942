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
    record.send_lag_ms += [0.1] * 19 + [5.0]
    summary = summarise(record, rows_per_request=100, wall_s=1.0)
    first, second = summary["timeline"][:2]
    assert (first["from_s"], first["requests"], first["ok"], first["status_503"]) == (0.0, 10, 10, 0)
    assert first["p99_ms"] == pytest.approx(80.0)
    assert (second["requests"], second["ok"], second["status_503"]) == (10, 5, 5)
    assert second["p99_ms"] == pytest.approx(10.0)
    assert summary["send_lag_p50_ms"] == pytest.approx(0.1)
    assert summary["send_lag_p99_ms"] > 1.0


def test_a_closed_loop_run_has_no_send_lag() -> None:
    record = Record()
    record.add(0.0, 1.0, 200)
    summary = summarise(record, rows_per_request=1, wall_s=1.0)
    assert summary["send_lag_p50_ms"] is None and len(summary["timeline"]) >= 1
