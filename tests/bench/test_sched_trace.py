"""bench/sched_trace.py: task switches read back into turns per CPU, and who ran in a window."""

from __future__ import annotations

import pytest

from bench.sched_trace import Run, others_in, parse, slowest_line, switched_in

# the kernel's format (trace_clock mono), one CPU each; comm names may hold dashes and slashes
TRACE = """\
# tracer: nop
          python-7170    [000] d..2.  100.000000: sched_switch: prev_comm=python prev_pid=7170 prev_prio=120 prev_state=R+ ==> next_comm=tokio-rt-worker next_pid=75 next_prio=120
 tokio-rt-worker-75      [000] d..2.  100.005000: sched_switch: prev_comm=tokio-rt-worker prev_pid=75 prev_prio=120 prev_state=S ==> next_comm=python next_pid=7170 next_prio=120
          python-7170    [000] ..s..  100.005500: softirq_entry: vec=1 [action=TIMER]
          python-7170    [000] d..2.  100.010000: sched_switch: prev_comm=python prev_pid=7170 prev_prio=120 prev_state=S ==> next_comm=swapper/0 next_pid=0 next_prio=120
          python-7171    [001] d..2.  100.001000: sched_switch: prev_comm=python prev_pid=7171 prev_prio=120 prev_state=R ==> next_comm=kdamond.0 next_pid=77 next_prio=120
       kdamond.0-77      [001] d..2.  100.003000: sched_switch: prev_comm=kdamond.0 prev_pid=77 prev_prio=120 prev_state=S ==> next_comm=python next_pid=7171 next_prio=120
"""


def test_switches_become_turns_per_cpu_up_to_the_next_switch() -> None:
    runs = parse(TRACE.splitlines())
    assert sorted(runs, key=lambda r: (r.cpu, r.start)) == [
        Run(0, 100.0, 100.005, "tokio-rt-worker", 75),
        Run(0, 100.005, 100.01, "python", 7170),
        Run(1, 100.001, 100.003, "kdamond.0", 77),
    ]  # the last switch of each CPU opens a turn with no known end: dropped


def test_others_in_a_window_counts_only_the_overlap_and_skips_ours_and_idle() -> None:
    runs = parse(TRACE.splitlines()) + [Run(0, 100.01, 100.02, "swapper/0", 0)]
    ours = lambda run: run.pid in (7170, 7171)  # noqa: E731
    both = others_in(runs, 100.002, 100.012, ours)
    assert both == {"tokio-rt-worker": pytest.approx(0.003), "kdamond.0": pytest.approx(0.001)}
    assert others_in(runs, 100.002, 100.012, ours, cpu=1) == {"kdamond.0": pytest.approx(0.001)}
    assert others_in(runs, 100.006, 100.02, ours) == {}


def test_switched_in_tells_a_window_without_any_task_switch() -> None:
    runs = parse(TRACE.splitlines())
    assert switched_in(runs, 100.004, 100.006, cpu=0)
    assert not switched_in(runs, 100.006, 100.009, cpu=0)
    assert not switched_in(runs, 100.004, 100.006, cpu=1)


def test_slowest_line_says_which_slow_answers_came_at_the_onset_and_what_else_ran() -> None:
    summary = {"t0": 1000.0, "slowest_ok": [[0.1, 40.0], [2.0, 30.0], [3.0, 25.0]]}
    runs = [
        Run(0, 1002.005, 1002.012, "tokio-rt-worker", 75),  # 7 ms inside the answer from 2.0 s
        Run(1, 1003.000, 1003.002, "python", 900),  # the benchmark itself: not counted
        Run(1, 1003.010, 1003.011, "redis-server", 901),
        Run(0, 1004.0, 1004.5, "kdamond.0", 77),  # after every slow answer
    ]
    line = slowest_line(summary, runs)
    assert line.startswith("slowest 3 answers (25.0-40.0 ms): 1 started in the first 0.25 s;")
    assert "took 0.0 ms (median; max 7.0)" in line and "tokio-rt-worker 7.0" in line and "kdamond" not in line
