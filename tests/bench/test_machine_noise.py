"""bench/machine_noise.py: stalls and slow stretches are counted against the median chunk."""

from __future__ import annotations

import pytest

from bench.machine_noise import NoiseProfile, probe, summarise


def _steady(n: int = 400, ms: float = 1.0) -> tuple[list[float], list[float]]:
    return [i * ms / 1e3 for i in range(n)], [ms] * n


def test_a_steady_run_has_no_stalls_and_no_slow_slices() -> None:
    profile = summarise(*_steady())
    assert profile == NoiseProfile(seconds=0.4, chunk_ms=1.0, stalls=0, longest_ms=1.0, slow_slices=0.0)


def test_a_frozen_chunk_is_a_stall_and_a_slowed_stretch_makes_its_slice_slow() -> None:
    starts, durations = _steady()
    durations[10] = 14.0  # the host took the CPU for ~13 ms (first slice)
    for i in range(300, 400):  # the last quarter second at 1.5x
        durations[i] = 1.5
    profile = summarise(starts, durations)
    assert profile.stalls == 1 and profile.longest_ms == 14.0
    assert profile.slow_slices == pytest.approx(0.5)  # 2 slices of 0.25 s: the second was slow
    assert "1 chunk(s)" in profile.line() and "50%" in profile.line() and profile.procs == 1


def test_a_chunk_just_under_the_stall_bound_is_not_a_stall() -> None:
    starts, durations = _steady()
    durations[5] = 4.9  # under STALL_MIN_MS, though 4.9x the median
    assert summarise(starts, durations).stalls == 0


def test_nothing_timed_is_an_error() -> None:
    with pytest.raises(ValueError):
        summarise([], [])


@pytest.mark.parametrize("procs", [1, 2])
def test_the_probe_times_real_chunks_in_each_process(procs: int) -> None:
    profile = probe(0.2, procs)
    assert profile.procs == procs and profile.seconds >= 0.2
    assert profile.chunk_ms > 0 and profile.longest_ms >= profile.chunk_ms
    assert profile.line().startswith(f"{procs} process(es) x 0 s:")
