"""ONNX Runtime's CPU per row alone, and beside Python neighbours that wake often.

    python -m bench.colocation --bundle <registry>/<version> [--wakeups 420] [--work-us 300] [--rounds 3] [--pin]

Why this exists: at 100 rows x 32 connections the service's inference workers spent ~80.6 us of
CPU per row where the raw-ORT ceiling (bench/ort_ceiling.py) spends ~75.6 on the same bundle and
VM (docs/benchmarks.md, session 22). The ceiling's sessions have their cores to themselves; the
workers share theirs with two event loops that wake ~420 times a second each and run ~0.3 ms of
Python per wake-up. This measures that effect without the service: one session per core (batch
``--batch``, one intra-op thread, niced like the workers), timed by thread CPU, in rounds that
alternate alone / beside ``--neighbours`` processes that wake ``--wakeups`` times a second on a
fixed schedule and then do ``--work-us`` of CPU of list and dict work, the event loop's kind of
Python. ``--pin`` puts every neighbour on CPU 0 and session i on CPU i, so one session has its
core to itself. Prints one line per round and a JSON summary (medians).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import typer

from bench.ort_ceiling import START_DELAY_S, _inputs, side_by_side, timed_calls, wait_until
from service.batcher import usable_cores
from service.settings import Settings

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)

@dataclass(frozen=True)
class Side:
    """What one process did over the measured window."""

    cpu_s: float
    wall_s: float
    rows: int = 0  # sessions only
    wakeups: int = 0  # neighbours only


@dataclass(frozen=True)
class Round:
    neighbours: int
    rows_per_s: float
    cpu_us_per_row: float  # the sessions' thread CPU per row computed
    session_cores: float  # the sessions' CPU over the window
    neighbour_cores: float
    wakeups_per_s: float  # per neighbour, as achieved
    per_session_rows_per_s: list[float]


def _pin(cpu: int | None) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})


def _session(bundle: str, batch: int, seconds: float, start_at: float, cpu: int | None, out: mp.Queue) -> None:
    os.nice(Settings.model_fields["inference_niceness"].default)  # as the service's workers run
    _pin(cpu)
    session, feeds, output = _inputs(Path(bundle), batch, os.getpid())
    for _ in range(20):
        session.run([output], feeds)
    calls, wall, cpu_s = timed_calls(session, feeds, output, seconds, start_at)
    out.put(("session", Side(cpu_s, wall, rows=calls * batch)))


def busy_python(work_us: float) -> None:
    """``work_us`` of thread CPU spent on small lists, dicts and strings (an event loop's kind of work)."""
    end = time.thread_time() + work_us / 1e6
    records = [{f"f{k}": str(i * 7 + k) for k in range(10)} for i in range(20)]
    while time.thread_time() < end:
        columns = [[r[f"f{k}"] for r in records] for k in range(10)]
        _ = {k: set(c) for k, c in enumerate(columns)}


def neighbour(seconds: float, wakeups: float, work_us: float, start_at: float, cpu: int | None = None) -> Side:
    """Wake ``wakeups`` times a second on a fixed schedule (a late wake-up skips the ticks it missed)
    and spend ``work_us`` of CPU each time."""
    _pin(cpu)
    wait_until(start_at)
    period = 1.0 / wakeups
    t0, c0, n = time.perf_counter(), time.thread_time(), 0
    next_at = t0
    while (now := time.perf_counter()) - t0 < seconds:
        if next_at > now:
            time.sleep(next_at - now)
        busy_python(work_us)
        n += 1
        next_at += period * max(1, int((time.perf_counter() - next_at) / period) + 1)
    return Side(time.thread_time() - c0, time.perf_counter() - t0, wakeups=n)


def _neighbour_proc(seconds: float, wakeups: float, work_us: float, start_at: float, cpu: int | None, out: mp.Queue) -> None:
    out.put(("neighbour", neighbour(seconds, wakeups, work_us, start_at, cpu)))


def one_round(
    bundle: Path, batch: int, seconds: float, procs: int, neighbours: int, wakeups: float, work_us: float, pin: bool
) -> Round:
    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()
    start_at = time.time() + START_DELAY_S
    jobs = [
        ctx.Process(target=_session, args=(str(bundle), batch, seconds, start_at, i if pin else None, out))
        for i in range(procs)
    ] + [
        ctx.Process(target=_neighbour_proc, args=(seconds, wakeups, work_us, start_at, 0 if pin else None, out))
        for _ in range(neighbours)
    ]
    sides = side_by_side(jobs, out, timeout=seconds + 120)
    return summarise_round(neighbours, [s for kind, s in sides if kind == "session"], [s for kind, s in sides if kind == "neighbour"])


def summarise_round(neighbours: int, sessions: list[Side], others: list[Side]) -> Round:
    rows = sum(s.rows for s in sessions)
    wall = max(s.wall_s for s in sessions)
    return Round(
        neighbours=neighbours,
        rows_per_s=rows / wall,
        cpu_us_per_row=sum(s.cpu_s for s in sessions) / rows * 1e6,
        session_cores=sum(s.cpu_s for s in sessions) / wall,
        neighbour_cores=sum(s.cpu_s / s.wall_s for s in others),
        wakeups_per_s=statistics.mean(s.wakeups / s.wall_s for s in others) if others else 0.0,
        per_session_rows_per_s=[s.rows / s.wall_s for s in sessions],
    )


def compare(rounds: list[Round]) -> dict:
    """Medians alone and beside the neighbours, and how much more CPU a row cost beside them."""
    alone = [r for r in rounds if r.neighbours == 0]
    beside = [r for r in rounds if r.neighbours > 0]
    if not alone or not beside:
        raise ValueError("need rounds both alone and beside neighbours")

    def median(rs: list[Round], field: str) -> float:
        return statistics.median(getattr(r, field) for r in rs)

    out = {
        "alone": {f: median(alone, f) for f in ("rows_per_s", "cpu_us_per_row", "session_cores")},
        "beside": {
            f: median(beside, f)
            for f in ("rows_per_s", "cpu_us_per_row", "session_cores", "neighbour_cores", "wakeups_per_s")
        },
    }
    out["cpu_per_row_ratio"] = out["beside"]["cpu_us_per_row"] / out["alone"]["cpu_us_per_row"]
    return out


@app.command()
def main(
    bundle: Path = typer.Option(..., help="bundle directory (<registry>/<version>)"),
    batch: int = typer.Option(100, help="rows per session.run"),
    seconds: float = typer.Option(5.0, min=0.1, help="measured seconds per round"),
    rounds: int = typer.Option(3, min=1, help="pairs of rounds (alone, beside)"),
    procs: int = typer.Option(0, help="sessions, one process each (0 = usable cores)"),
    neighbours: int = typer.Option(2, min=1, help="Python neighbour processes (the service has one event loop per core)"),
    wakeups: float = typer.Option(420.0, min=1.0, help="wake-ups per second of each neighbour"),
    work_us: float = typer.Option(300.0, min=0.0, help="CPU per wake-up, microseconds"),
    pin: bool = typer.Option(False, help="neighbours on CPU 0, session i on CPU i"),
) -> None:
    procs = procs or usable_cores()
    results = []
    for r in range(rounds):
        for n in (0, neighbours):
            res = one_round(bundle, batch, seconds, procs, n, wakeups, work_us, pin)
            results.append(res)
            print(
                f"round {r} neighbours {n}: {res.rows_per_s:8,.0f} rows/s, {res.cpu_us_per_row:5.1f} us CPU/row, "
                f"sessions {res.session_cores:.2f} cores, neighbours {res.neighbour_cores:.2f} cores at "
                f"{res.wakeups_per_s:,.0f} wake-ups/s each, per session "
                + " / ".join(f"{x:,.0f}" for x in res.per_session_rows_per_s),
                flush=True,
            )
    print(json.dumps({"rounds": [asdict(r) for r in results], **compare(results)}))


if __name__ == "__main__":
    app()
