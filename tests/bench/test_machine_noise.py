"""bench/machine_noise.py: stalls and slow stretches are counted against the median chunk."""

from __future__ import annotations

import pytest

from bench.machine_noise import PAUSED, UNATTRIBUTED, Chunks, NoiseProfile, probe, stall_causes, summarise
from bench.sched_trace import Run


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


def test_stall_causes_names_the_task_that_took_the_cpu_or_a_paused_vm() -> None:
    starts, durations = _steady(n=100)
    durations[10] = 8.0  # chunk from 10 ms: kdamond.0 ran 6 ms of it on this CPU
    durations[50] = 9.0  # chunk from 50 ms: no task switch at all on this CPU (the host took it)
    durations[80] = 7.0  # chunk from 80 ms: only our own process switched (e.g. interrupts)
    proc = Chunks(starts, durations, begin=1000.0, pid=42, cpu=1)
    runs = [
        Run(1, 1000.0105, 1000.0165, "kdamond.0", 77),
        Run(0, 1000.050, 1000.060, "tokio-rt-worker", 75),  # another CPU: not this stall's cause
        Run(1, 1000.0805, 1000.081, "python", 42),
    ]
    assert stall_causes([proc], runs) == {"kdamond.0": 1, PAUSED: 1, UNATTRIBUTED: 1}


def test_a_profile_with_causes_names_them_in_its_line() -> None:
    profile = NoiseProfile(seconds=5, chunk_ms=0.6, stalls=3, longest_ms=9, slow_slices=0, procs=2,
                           causes={PAUSED: 1, "kdamond.0": 2})
    assert profile.line().endswith(f"stalls by cause: kdamond.0 2, {PAUSED} 1")
