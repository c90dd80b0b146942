"""How steady this machine's CPU is, measured while it is otherwise idle.

    python -m bench.machine_noise [--seconds 5] [--procs N]

One process per usable core (by default) hashes the same 1 MiB buffer over and over (fixed work,
~0.75 ms a chunk here) and times each chunk. On a steady host every chunk takes about the median:
one H100 host lent through the device tool (session 13, 1, 2 and 16 processes x 5 s): 0 stalls,
longest chunk 1.2-3.7 ms (another, probed alone 3 x 5 s, had 3-16 stalls of up to 9.6 ms: hosts
differ). On this 2-core VM the host takes the CPU away now and then, with the guest's
steal counter at 0, so `vmstat` shows nothing: 22-37 chunks stalled 5-11 ms per 2 x 5 s, and
10-18 % of quarter seconds ran at >= 1.3x the median. Under load such a moment slows every request
in flight at once, so a tail-latency ratio measured on that machine (the overload line of
docs/benchmarks.md) moves with it. bench/serving_engine.py runs this before its grid and right
before its overload run and prints both next to the numbers.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import typer

CHUNK_BYTES = 1 << 20
# A chunk counts as stalled when it took this many times the median, and at least STALL_MIN_MS.
STALL_FACTOR = 5.0
STALL_MIN_MS = 5.0
# A slice of the run counts as slow when its chunks took this many times the median on average.
SLICE_S = 0.25
SLOW_FACTOR = 1.3


@dataclass(frozen=True)
class NoiseProfile:
    seconds: float
    chunk_ms: float  # median chunk
    stalls: int  # chunks >= STALL_FACTOR x the median (and >= STALL_MIN_MS)
    longest_ms: float
    slow_slices: float  # share of SLICE_S slices whose mean chunk was >= SLOW_FACTOR x the median
    procs: int = 1  # processes timed at once

    def line(self) -> str:
        return (
            f"{self.procs} process(es) x {self.seconds:.0f} s: {self.stalls} chunk(s) of ~{self.chunk_ms:.2f} ms "
            f"stalled >= {STALL_MIN_MS:g} ms "
            f"(longest {self.longest_ms:.1f} ms); {self.slow_slices:.0%} of {SLICE_S:g}-s slices ran >= "
            f"{SLOW_FACTOR:g}x slower than the median"
        )


def summarise(starts_s: Sequence[float], durations_ms: Sequence[float], slice_s: float = SLICE_S) -> NoiseProfile:
    """The profile of chunk timings (``starts_s`` since the probe began, in order)."""
    if not durations_ms:
        raise ValueError("no chunks were timed")
    median = statistics.median(durations_ms)
    stall_ms = max(STALL_MIN_MS, STALL_FACTOR * median)
    slices: dict[int, list[float]] = {}
    for start, ms in zip(starts_s, durations_ms, strict=True):
        slices.setdefault(int(start // slice_s), []).append(ms)
    slow = sum(1 for part in slices.values() if statistics.fmean(part) >= SLOW_FACTOR * median)
    seconds = starts_s[-1] + durations_ms[-1] / 1e3
    return NoiseProfile(
        seconds=round(seconds, 2),
        chunk_ms=round(median, 3),
        stalls=sum(1 for ms in durations_ms if ms >= stall_ms),
        longest_ms=round(max(durations_ms), 2),
        slow_slices=round(slow / len(slices), 3),
    )


def _timed_chunks(seconds: float) -> tuple[list[float], list[float]]:
    """Chunk start times (s since this call) and durations (ms) of fixed CPU work on this thread."""
    buffer = bytes(CHUNK_BYTES)
    starts: list[float] = []
    durations: list[float] = []
    begin = time.perf_counter()
    while (now := time.perf_counter()) - begin < seconds:
        hashlib.sha256(buffer).digest()
        starts.append(now - begin)
        durations.append((time.perf_counter() - now) * 1e3)
    return starts, durations


def probe(seconds: float = 3.0, procs: int = 0) -> NoiseProfile:
    """Time fixed CPU work in ``procs`` processes at once (0: one per usable core, as a loaded
    service keeps every core busy; a VM's vCPUs are taken away more often when all of them want
    to run) and profile every process's chunks together: stalls add up, slices are counted per
    process."""
    if not procs:
        from service.batcher import usable_cores  # numpy and the service only when asked to count

        procs = usable_cores()
    if procs == 1:
        runs = [_timed_chunks(seconds)]
    else:
        with multiprocessing.get_context("spawn").Pool(procs) as pool:
            runs = pool.map(_timed_chunks, [seconds] * procs)
    profiles = [summarise(*run) for run in runs]
    median = statistics.median(p.chunk_ms for p in profiles)
    return NoiseProfile(
        seconds=min(p.seconds for p in profiles),
        chunk_ms=median,
        stalls=sum(p.stalls for p in profiles),
        longest_ms=max(p.longest_ms for p in profiles),
        slow_slices=round(statistics.fmean(p.slow_slices for p in profiles), 3),
        procs=procs,
    )


def main(
    seconds: float = typer.Option(5.0, min=0.5, help="seconds of fixed work to time"),
    procs: int = typer.Option(0, min=0, help="processes at once (0: one per usable core)"),
) -> None:
    profile = probe(seconds, procs)
    print(profile.line())
    print(json.dumps(asdict(profile)))


if __name__ == "__main__":
    typer.run(main)
