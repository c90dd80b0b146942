"""bench/report.py's overload timeline line: one p99 per slice, the worst marked, nothing to say without slices."""

from __future__ import annotations

from bench.report import timeline_line


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
