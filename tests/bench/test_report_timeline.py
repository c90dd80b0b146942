"""bench/report.py's overload lines: one p99 per slice (the worst marked), the client's lateness, the machine's steadiness."""

from __future__ import annotations

from bench.report import noise_line, timeline_line


def _slice(start: float, ok: int, p99: float | None) -> dict:
    return {"from_s": start, "requests": ok + 3, "ok": ok, "status_503": 3, "p99_ms": p99}


def test_each_slice_with_answers_gets_its_p99_and_the_worst_is_bold() -> None:
    summary = {"timeline": [_slice(0.0, 40, 47.2), _slice(0.5, 38, 86.4), _slice(1.0, 41, 28.6), _slice(1.5, 0, None)]}
    line = timeline_line(summary)
    assert line is not None and "per 0.5 s" in line
    assert line.endswith("47, **86**, 29.")  # the empty last slice (the run's tail) is left out


def test_no_line_without_at_least_two_slices() -> None:
    assert timeline_line({"timeline": [_slice(0.0, 10, 20.0)]}) is None
    assert timeline_line({}) is None


def test_the_worst_slice_says_how_late_the_load_client_itself_sent() -> None:
    slices = [_slice(0.0, 40, 20.0), _slice(0.5, 38, 96.0), _slice(1.0, 41, 22.0)]
    for b, lag in zip(slices, (3.0, 8.0, 12.0), strict=True):
        b["send_lag_max_ms"] = lag
    line = timeline_line({"timeline": slices})
    assert line is not None and line.endswith("at most 8 ms late in the worst slice (12 ms in any).")
    del slices[0]["send_lag_max_ms"]  # a closed-loop run has no send lag: nothing said
    assert "late" not in (timeline_line({"timeline": slices}) or "")


def test_the_noise_line_reports_each_probe_and_nothing_without_them() -> None:
    quiet = {"seconds": 3.0, "chunk_ms": 0.7, "stalls": 0, "longest_ms": 1.1, "slow_slices": 0.0, "procs": 2}
    noisy = {"seconds": 3.0, "chunk_ms": 0.7, "stalls": 9, "longest_ms": 17.5, "slow_slices": 0.25, "procs": 2}
    line = noise_line({"noise_start": quiet, "noise_before_overload": noisy})
    assert line is not None
    assert "before the grid, 2 process(es) x 3 s: 0 chunk(s)" in line
    assert "right before the overload, 2 process(es) x 3 s: 9 chunk(s)" in line and "longest 17.5 ms" in line and "25%" in line
    assert noise_line({}) is None
