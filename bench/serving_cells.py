"""A few serving-benchmark cells against one server, with the CPU each thread used: for A/B work.

    python -m bench.serving_cells --registry /tmp/frappe-reg --cells 1x32,100x8,100o400 \
        [--processes 1] [--server naive] [--scrape]

``RxC`` is a closed-loop cell (R rows per request, C connections); ``RoN`` an open-loop run at
N requests/s (the overload shape). Environment variables (DLF_*) reach the server, so a setting
is compared by running this twice. bench/serving_engine.py is the full, documented run; this
is the quick loop that its "What changed" rows were measured with (same load client, same
Redis setup). ``--scrape`` prints the server-side latency histogram after each cell.
``--trace`` (root) records the scheduler's task switches during each open-loop cell
(bench/sched_trace.py) and says how much CPU tasks outside the benchmark (the servers, the load
client, Redis) took while the slowest answers were in flight, and how many of those started in
the overload's first quarter second.
"""

from __future__ import annotations

import resource
import time
import uuid
from contextlib import nullcontext
from pathlib import Path

import httpx
import typer

from bench.load_client import TIMELINE_STEP_S
from bench.sched_trace import sched_trace, slowest_line
from bench.serving_engine import (
    FRAPPE,
    drop_prefix,
    frappe_records,
    load,
    naive_cmd,
    publish,
    server,
    service_cmd,
    wait_ready,
    write_bodies,
)
from service.contract import resolve_current

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


def parse_cells(spec: str) -> list[tuple[int, int, float]]:
    """``"1x32,100o400"`` -> [(rows, connections, rate)]; rate 0 = closed loop."""
    cells = []
    for part in spec.split(","):
        if "o" in part:
            rows, rate = part.split("o")
            cells.append((int(rows), 512, float(rate)))
        else:
            rows, conns = part.split("x")
            cells.append((int(rows), int(conns), 0.0))
    return cells


def thread_cpu() -> dict[tuple[str, str], int]:
    """CPU ticks per (process command line, thread) of every process: /proc, Linux only."""
    out: dict[tuple[str, str], int] = {}
    for stat in Path("/proc").glob("[0-9]*/task/[0-9]*/stat"):
        try:
            text = stat.read_text()
            cmdline = (stat.parents[2] / "cmdline").read_bytes().replace(b"\0", b" ").decode()[:70]
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        pid, tid = stat.parts[2], stat.parts[4]
        key = (cmdline, "main" if pid == tid else f"thread {tid}")
        out[key] = out.get(key, 0) + int(fields[11]) + int(fields[12])
    return out


@app.command()
def main(
    registry: Path = typer.Option(..., help="bundle registry (the Frappe default bundle)"),
    cells: str = typer.Option("1x32", help="comma list of RxC (closed loop) or RoN (open loop, N req/s)"),
    processes: int = typer.Option(0, help="serve --processes N (0: the service's default)"),
    server_kind: str = typer.Option("service", "--server", help="service or naive"),
    seconds: float = typer.Option(5.0),
    scrape: bool = typer.Option(False, help="print the server-side latency histogram after each cell"),
    timeline_step: float = typer.Option(TIMELINE_STEP_S, help="open-loop cells: seconds per slice of the printed timeline"),
    redis_url: str = typer.Option("redis://127.0.0.1:6379/0"),
    embedded: bool = typer.Option(False, help="no Redis: the service reads ids from the bundle (hosts without redis-server)"),
    n_records: int = typer.Option(4000, "--records", help="distinct Frappe rows the bodies draw from"),
    trace: bool = typer.Option(False, help="root: trace task switches during open-loop cells (see above)"),
) -> None:
    version = resolve_current(registry)
    if version is None:
        raise typer.BadParameter(f"no bundle in {registry}", param_hint="--registry")
    records = frappe_records(FRAPPE, n_records)
    prefix = f"cells-{uuid.uuid4().hex[:8]}:"
    redis = server_kind == "service" and not embedded
    if server_kind == "service":
        cmd = service_cmd(processes)
        env = {"DLF_REGISTRY": str(registry), "DLF_MODEL_VERSION": version, "DLF_RELOAD_PUBSUB": "false"}
    else:
        cmd, env = naive_cmd(), {"NAIVE_BUNDLE": str(registry / version)}
    if redis:
        publish(registry, version, redis_url, prefix)
        env |= {"REDIS_URL": redis_url, "DLF_REDIS_PREFIX": prefix}
    work = Path(typer.get_app_dir("dlf-bench")) / "cells"
    work.mkdir(parents=True, exist_ok=True)
    try:
        with server(cmd, env, work / f"{server_kind}.log") as url:
            if server_kind == "service":
                wait_ready(url)
            for rows, conns, rate in parse_cells(cells):
                bodies = write_bodies(records, rows, work / f"bodies-{rows}.jsonl")
                before, start = thread_cpu(), time.monotonic()
                client_before = resource.getrusage(resource.RUSAGE_CHILDREN)
                extra = {"rate": rate, "timeline_step": timeline_step} if rate else {}
                with sched_trace() if trace and rate else nullcontext([]) as runs:
                    res = load(url, bodies, rows, conns, seconds, 1.0, timeout=15.0, **extra)
                after, wall = thread_cpu(), time.monotonic() - start
                client_after = resource.getrusage(resource.RUSAGE_CHILDREN)
                client_cpu = sum(getattr(client_after, f) - getattr(client_before, f) for f in ("ru_utime", "ru_stime"))
                print(f"   cpu {client_cpu / wall:4.2f} cores  load client (warm-up included)")
                used = sorted(((v - before.get(k, 0)) / 100 / wall, k) for k, v in after.items())[::-1]
                for cores, (command, thread) in used[:10]:
                    if cores >= 0.05:
                        print(f"   cpu {cores:4.2f} cores  {thread:14s} {command}")
                if scrape:
                    for line in httpx.get(f"{url}/metrics").text.splitlines():
                        if (
                            line.startswith("dlf_request_latency_seconds_bucket") and "/predict" in line
                        ) or line.startswith(("dlf_feature_cache_hits_total", "dlf_feature_cache_misses_total")):
                            print("   ", line)
                if rate:
                    print(f"   per {timeline_step:g} s: " + " ".join(
                        f"{b['ok']}/{b['status_503']}:{b['p99_ms'] or 0:.0f}~{b.get('send_lag_max_ms') or 0:.0f}" for b in res["timeline"]
                    ) + "  (200s/503s:p99 ms of the 200s~the load client's latest send, ms)")
                    print(f"   client send lag p50 {res['send_lag_p50_ms']:.1f} ms p99 {res['send_lag_p99_ms']:.1f} ms")
                    print("   slowest 200s (started at s: ms): " + ", ".join(
                        f"{start:.2f}: {ms:.0f}" for start, ms in sorted(res["slowest_ok"])
                    ))
                    if trace:
                        print(f"   {slowest_line(res, runs)}")
                shape = f"{rows}x{conns}" if not rate else f"{rows} rows at {rate:g} req/s"
                print(
                    f"{server_kind} {shape}: {res['rows_per_s']:,.0f} rows/s p50 {res['p50_ms'] or 0:.1f} ms "
                    f"p99 {res['p99_ms'] or 0:.1f} ms 503s {res['status_503']} (p99 {res['p99_503_ms'] or 0:.1f} ms) "
                    f"timeouts+errors {res['timeouts'] + res['errors']}",
                    flush=True,
                )
    finally:
        if redis:
            drop_prefix(redis_url, prefix)


if __name__ == "__main__":
    app()
