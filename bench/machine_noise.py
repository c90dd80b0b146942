"""How steady this machine's CPU is, measured while it is otherwise idle.

    python -m bench.machine_noise [--seconds 5] [--procs N] [--trace]

One process per usable core (by default) hashes the same 1 MiB buffer over and over (fixed work,
0.57-0.75 ms a chunk here) and times each chunk. On a steady host every chunk takes about the median:
one H100 host lent through the device tool (session 13, 1, 2 and 16 processes x 5 s): 0 stalls,
longest chunk 1.2-3.7 ms (another, probed alone 3 x 5 s, had 3-16 stalls of up to 9.6 ms: hosts
differ). On this 2-core VM in session 13, 22-37 chunks stalled 5-11 ms per 2 x 5 s and 10-18 % of
quarter seconds ran at >= 1.3x the median; on session 14's machine, 0-2 stalls. ``--trace`` told
what such stalls are (session 14): mostly another task of the guest taking that CPU for 5-8 ms
(the sandbox's agent, ``kdamond.0``, the Erlang VM of the RabbitMQ this machine kind starts), and
now and then a pause of the whole VM (both CPUs stalled 38 ms at the same instant with no task
switch in the guest; its steal counter stays 0, so `vmstat` shows nothing). Under load such a
moment slows every request in flight at once, so a tail-latency ratio measured on that machine
(the overload line of docs/benchmarks.md) moves with it. bench/serving_engine.py runs this before
its grid and right before its overload run and prints both next to the numbers.

``--trace`` (root) pins one process per CPU, records the scheduler's task switches meanwhile
(bench/sched_trace.py) and names what stalled each chunk: another task of the guest on that CPU
(the sandbox's agent, a kernel thread, a database the machine kind starts), or nothing the guest
saw (no task switch on that CPU during the stall: the VM itself was paused).
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field

import typer

from bench.sched_trace import Run, others_in, sched_trace, switched_in

CHUNK_BYTES = 1 << 20
# A chunk counts as stalled when it took this many times the median, and at least STALL_MIN_MS.
STALL_FACTOR = 5.0
STALL_MIN_MS = 5.0
# A slice of the run counts as slow when its chunks took this many times the median on average.
SLICE_S = 0.25
SLOW_FACTOR = 1.3
# --trace: a stall no guest task explains, with no task switch on its CPU (the host paused the VM) ...
PAUSED = "VM paused (no task switch in the guest)"
# ... or with switches that account for little of it (interrupts, say: only switches are traced)
UNATTRIBUTED = "unattributed"


@dataclass(frozen=True)
class NoiseProfile:
    seconds: float
    chunk_ms: float  # median chunk
    stalls: int  # chunks >= STALL_FACTOR x the median (and >= STALL_MIN_MS)
    longest_ms: float
    slow_slices: float  # share of SLICE_S slices whose mean chunk was >= SLOW_FACTOR x the median
    procs: int = 1  # processes timed at once
    causes: dict[str, int] = field(default_factory=dict)  # --trace: stalled chunks by what took the CPU

    def line(self) -> str:
        text = (
            f"{self.procs} process(es) x {self.seconds:.0f} s: {self.stalls} chunk(s) of ~{self.chunk_ms:.2f} ms "
            f"stalled >= {STALL_MIN_MS:g} ms "
            f"(longest {self.longest_ms:.1f} ms); {self.slow_slices:.0%} of {SLICE_S:g}-s slices ran >= "
            f"{SLOW_FACTOR:g}x slower than the median"
        )
        if self.causes:
            text += "; stalls by cause: " + ", ".join(f"{name} {n}" for name, n in Counter(self.causes).most_common())
        return text


def stall_ms(median_ms: float) -> float:
    """How long a chunk must take to count as stalled, given the median chunk of its process."""
    return max(STALL_MIN_MS, STALL_FACTOR * median_ms)


def summarise(starts_s: Sequence[float], durations_ms: Sequence[float], slice_s: float = SLICE_S) -> NoiseProfile:
    """The profile of chunk timings (``starts_s`` since the probe began, in order)."""
    if not durations_ms:
        raise ValueError("no chunks were timed")
    median = statistics.median(durations_ms)
    threshold = stall_ms(median)
    slices: dict[int, list[float]] = {}
    for start, ms in zip(starts_s, durations_ms, strict=True):
        slices.setdefault(int(start // slice_s), []).append(ms)
    slow = sum(1 for part in slices.values() if statistics.fmean(part) >= SLOW_FACTOR * median)
    seconds = starts_s[-1] + durations_ms[-1] / 1e3
    return NoiseProfile(
        seconds=round(seconds, 2),
        chunk_ms=round(median, 3),
        stalls=sum(1 for ms in durations_ms if ms >= threshold),
        longest_ms=round(max(durations_ms), 2),
        slow_slices=round(slow / len(slices), 3),
    )


@dataclass(frozen=True)
class Chunks:
    """One process's timed chunks: starts (s since ``begin``) and durations (ms); ``begin`` is a
    ``time.perf_counter`` reading (CLOCK_MONOTONIC, the scheduler trace's clock), ``cpu`` the CPU
    the process was pinned to, if any."""

    starts: list[float]
    durations: list[float]
    begin: float
    pid: int
    cpu: int | None = None


def _timed_chunks(seconds: float, cpu: int | None = None) -> Chunks:
    """Fixed CPU work on this thread for ``seconds``, each chunk timed; pinned to ``cpu`` if given."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    buffer = bytes(CHUNK_BYTES)
    starts: list[float] = []
    durations: list[float] = []
    begin = time.perf_counter()
    while (now := time.perf_counter()) - begin < seconds:
        hashlib.sha256(buffer).digest()
        starts.append(now - begin)
        durations.append((time.perf_counter() - now) * 1e3)
    return Chunks(starts, durations, begin, os.getpid(), cpu)


def _timed_chunks_star(args: tuple[float, int | None]) -> Chunks:
    return _timed_chunks(*args)


def stall_causes(processes: Sequence[Chunks], runs: Sequence[Run]) -> Counter[str]:
    """What took the CPU during each stalled chunk of pinned ``processes``: the task that ran
    longest on that CPU meanwhile, when other tasks account for at least half the chunk's excess
    over the median; PAUSED when no task switch happened on that CPU at all (the guest never
    took the CPU away, so the host did); otherwise UNATTRIBUTED."""
    ours = {p.pid for p in processes} | {os.getpid()}  # the pool's parent too: the probe's own
    causes: Counter[str] = Counter()
    for proc in processes:
        assert proc.cpu is not None, "stalls are attributed per CPU: pin the processes"
        median = statistics.median(proc.durations)
        threshold = stall_ms(median)
        for start, ms in zip(proc.starts, proc.durations, strict=True):
            if ms < threshold:
                continue
            lo = proc.begin + start
            hi = lo + ms / 1e3
            others = others_in(runs, lo, hi, lambda run: run.pid in ours, cpu=proc.cpu)
            if sum(others.values()) * 1e3 >= 0.5 * (ms - median):
                causes[others.most_common(1)[0][0]] += 1
            elif not switched_in(runs, lo, hi, proc.cpu):
                causes[PAUSED] += 1
            else:
                causes[UNATTRIBUTED] += 1
    return causes


def probe(seconds: float = 3.0, procs: int = 0, trace: bool = False) -> NoiseProfile:
    """Time fixed CPU work in ``procs`` processes at once (0: one per usable core, as a loaded
    service keeps every core busy; a VM's vCPUs are taken away more often when all of them want
    to run) and profile every process's chunks together: stalls add up, slices are counted per
    process. ``trace``: pin them one per CPU and name the cause of each stall (root only)."""
    if not procs:
        from service.batcher import usable_cores  # numpy and the service only when asked to count

        procs = usable_cores()
    cpus: list[int | None] = [None] * procs
    if trace:
        allowed = sorted(os.sched_getaffinity(0))
        cpus = [allowed[i % len(allowed)] for i in range(procs)]
    tracing = sched_trace() if trace else nullcontext([])
    with tracing as runs:
        if procs == 1:
            chunks = [_timed_chunks(seconds, cpus[0])]
        else:
            with multiprocessing.get_context("spawn").Pool(procs) as pool:
                chunks = pool.map(_timed_chunks_star, [(seconds, cpu) for cpu in cpus])
    profiles = [summarise(c.starts, c.durations) for c in chunks]
    median = statistics.median(p.chunk_ms for p in profiles)
    return NoiseProfile(
        seconds=min(p.seconds for p in profiles),
        chunk_ms=median,
        stalls=sum(p.stalls for p in profiles),
        longest_ms=max(p.longest_ms for p in profiles),
        slow_slices=round(statistics.fmean(p.slow_slices for p in profiles), 3),
        procs=procs,
        causes=dict(stall_causes(chunks, runs)) if trace else {},
    )


def main(
    seconds: float = typer.Option(5.0, min=0.5, help="seconds of fixed work to time"),
    procs: int = typer.Option(0, min=0, help="processes at once (0: one per usable core)"),
    trace: bool = typer.Option(False, help="root: pin one process per CPU and name what stalled each chunk"),
) -> None:
    profile = probe(seconds, procs, trace)
    print(profile.line())
    print(json.dumps(asdict(profile)))


if __name__ == "__main__":
    typer.run(main)
