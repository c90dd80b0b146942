"""Who had each CPU, and when: the kernel's ``sched_switch`` trace (ftrace), read after a run.

A tail-latency benchmark on a shared 2-core VM needs to know whether a slow moment was the
service's own doing, another task of the guest taking a core (the sandbox's agent, a kernel
thread, a database the machine kind starts), or the VM itself being paused by its host (then no
task switch happens in the guest at all and every core stalls at once; the guest's steal counter
stays 0 here, so `vmstat` cannot tell). The scheduler's own record answers it: with the trace
clock set to ``mono`` its timestamps are CLOCK_MONOTONIC, the clock behind ``time.perf_counter``
on Linux, so a process can name a window in its own time and ask what ran on each core then.

Root only (tracefs); ``available()`` says whether this machine allows it. Used by
``python -m bench.machine_noise --trace``, ``python -m bench.serving_cells --trace`` and, when it
may, the full run (bench/serving_engine.py: its noise probes and the service's overload).
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TRACEFS = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))
EVENT = "sched:sched_switch"
_LINE = re.compile(r"^\s*.+?-\d+\s+\[(\d+)\]\s+\S+\s+([\d.]+):\s+sched_switch:\s+(.*)$")
_NEXT = re.compile(r"next_comm=(.*?) next_pid=(\d+)")


@dataclass(frozen=True)
class Run:
    """One task's turn on one CPU, from the switch to it until the next switch on that CPU."""

    cpu: int
    start: float  # CLOCK_MONOTONIC seconds
    end: float
    comm: str
    pid: int

    @property
    def idle(self) -> bool:
        return self.pid == 0


def parse(lines: Iterable[str]) -> list[Run]:
    """Turns of every CPU from ``sched_switch`` lines of a trace (other lines are skipped)."""
    switches: dict[int, list[tuple[float, str, int]]] = {}
    for line in lines:
        m = _LINE.match(line)
        if m is None:
            continue
        nxt = _NEXT.search(m.group(3))
        if nxt is None:
            continue
        switches.setdefault(int(m.group(1)), []).append((float(m.group(2)), nxt.group(1), int(nxt.group(2))))
    runs = []
    for cpu, events in switches.items():
        events.sort(key=lambda e: e[0])
        runs += [
            Run(cpu, t, t_next, comm, pid)
            for (t, comm, pid), (t_next, _, _) in zip(events, events[1:], strict=False)
        ]
    return runs


def others_in(
    runs: Iterable[Run], start: float, end: float, ours: Callable[[Run], bool], cpu: int | None = None
) -> Counter[str]:
    """Seconds that tasks other than ``ours`` (and the idle task) ran within [start, end], by name;
    on one ``cpu`` or on all."""
    out: Counter[str] = Counter()
    for run in runs:
        if (cpu is not None and run.cpu != cpu) or run.idle or ours(run):
            continue
        overlap = min(run.end, end) - max(run.start, start)
        if overlap > 0:
            out[run.comm] += overlap
    return out


def switched_in(runs: Iterable[Run], start: float, end: float, cpu: int) -> bool:
    """Whether any task switch happened on ``cpu`` within [start, end]."""
    return any(run.cpu == cpu and start < run.start < end for run in runs)


# The start of an overload, when a process may still be in normal mode (service/batcher.py).
ONSET_S = 0.25


def under_test(run: Run) -> bool:
    """The benchmark's own tasks: the servers and the load client (Python), and Redis."""
    return run.comm.startswith("python") or run.comm == "redis-server"


def slowest_line(summary: dict[str, Any], runs: list[Run]) -> str:
    """Where the slowest answers of an open-loop cell came from: the overload's start, or CPU
    that other tasks of the machine took while they were in flight (a load client summary with
    ``t0`` and ``slowest_ok``, and a scheduler trace of the run)."""
    t0, slowest = summary["t0"], summary["slowest_ok"]
    if not slowest:
        return "no answers"
    others = [others_in(runs, t0 + start, t0 + start + ms / 1e3, under_test) for start, ms in slowest]
    taken = [sum(o.values()) * 1e3 for o in others]
    by_task = sum(others, Counter())
    early = sum(1 for start, _ in slowest if start < ONSET_S)
    top = ", ".join(f"{name} {seconds * 1e3:.1f}" for name, seconds in by_task.most_common(3))
    return (
        f"slowest {len(slowest)} answers ({slowest[-1][1]:.1f}-{slowest[0][1]:.1f} ms): {early} started in the "
        f"first {ONSET_S:g} s; other tasks took {statistics.median(taken):.1f} ms (median; max {max(taken):.1f}) "
        f"of CPU while each was in flight" + (f" (in all, ms: {top})" if top else "")
    )


def available(mount: bool = False) -> Path | None:
    """The tracefs directory when this process may trace the scheduler, else None; with ``mount``,
    root mounts tracefs first where the machine has not (this VM boots without it)."""
    if mount and os.geteuid() == 0 and not any((root / "set_event").exists() for root in TRACEFS):
        subprocess.run(["mount", "-t", "tracefs", "nodev", str(TRACEFS[0])], check=False, capture_output=True)
    for root in TRACEFS:
        if (root / "events/sched/sched_switch").is_dir() and os.access(root / "set_event", os.W_OK):
            return root
    return None


@contextmanager
def sched_trace(buffer_kb: int = 65536) -> Iterator[list[Run]]:
    """Trace task switches for the ``with`` block; the yielded list fills with its runs on exit.

    The tracer's previous clock, events, buffer size and on/off state are restored afterwards.
    """
    root = available(mount=True)
    if root is None:
        raise PermissionError("tracing the scheduler needs root and tracefs (/sys/kernel/tracing)")
    saved = {
        name: (root / name).read_text()
        for name in ("trace_clock", "set_event", "buffer_size_kb", "tracing_on")
    }
    clock = re.search(r"\[(\S+)\]", saved["trace_clock"])
    runs: list[Run] = []
    try:
        (root / "tracing_on").write_text("0")
        (root / "trace").write_text("")
        (root / "trace_clock").write_text("mono")
        (root / "buffer_size_kb").write_text(str(buffer_kb))
        (root / "set_event").write_text(EVENT)
        (root / "tracing_on").write_text("1")
        yield runs
        (root / "tracing_on").write_text("0")
        with (root / "trace").open() as fh:
            runs += parse(fh)
    finally:
        (root / "tracing_on").write_text("0")
        (root / "set_event").write_text("")
        for event in saved["set_event"].split():
            with (root / "set_event").open("a") as fh:
                fh.write(event)
        if clock is not None:
            (root / "trace_clock").write_text(clock.group(1))
        (root / "buffer_size_kb").write_text(saved["buffer_size_kb"].split()[0])
        (root / "trace").write_text("")
        (root / "tracing_on").write_text(saved["tracing_on"].strip())
