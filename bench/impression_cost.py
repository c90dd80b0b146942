"""Cost of impression logging: the same service with the impression log on and off, side by side.

    .venv/bin/python -m bench.impression_cost [--registry R] [--rounds 5] [--seconds 8] \
        [--concurrency 8] [--rows 100] [--out docs/closed-loop-bench.md]

Two real uvicorn processes over the same bundle and the same private redis-server
(Redis feature store in both); the only difference is ``DLF_IMPRESSIONS_ENABLED``.
This process is the load generator (the servers run in their own processes):
``concurrency`` HTTP clients each send ``rows``-row /predict requests back to back.
Rounds alternate off/on so drifting machine load hits both alike; the table gives
the median rows/s per configuration and the ratio. ``dlf_impressions_logged_total``
and ``dlf_impressions_dropped_total`` of the "on" server are read back so a run that
silently dropped impressions cannot pass as cheap. Without --registry the tiny test
bundle is used: its inference is nearly free, so logging's share of the cost is the
largest it can be (a conservative bound for real models).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
from pathlib import Path

import httpx
import redis
import typer
from prometheus_client.parser import text_string_to_metric_families

# Process helpers shared with the end-to-end tests (real uvicorn / redis-server on free ports).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))
from serving_support import RedisServer, publish_with_cli, uvicorn_server  # noqa: E402

from bench.serving_load import drive, sample_rows  # noqa: E402
from service.testing import write_tiny_bundle  # noqa: E402

app = typer.Typer(add_completion=False)
PREFIX = "bench-imp:"


def uvicorn_pid(url: str) -> int:
    """Pid of the uvicorn process serving ``url`` (found by its --port argument in /proc)."""
    port = url.rsplit(":", 1)[1]
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"uvicorn" in args and b"--port" in args and args[args.index(b"--port") + 1] == port.encode():
            return int(proc.name)
    raise RuntimeError(f"no uvicorn process found for {url}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/<pid>/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def metric_sum(url: str, name: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name)


@app.command()
def main(
    registry: Path | None = typer.Option(None, help="bundle registry (default: the tiny test bundle)"),
    rounds: int = typer.Option(5, min=1, help="off/on rounds"),
    seconds: float = typer.Option(8.0, help="seconds of load per configuration and round"),
    concurrency: int = typer.Option(8, help="concurrent HTTP clients"),
    rows: int = typer.Option(100, help="rows per /predict request"),
    out: Path | None = typer.Option(None, help="write the markdown result here"),
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        reg = registry
        if reg is None:
            reg = work / "registry"
            write_tiny_bundle(reg)
        pool = sample_rows(reg, 4000)
        server = RedisServer(work)
        server.start()
        try:
            publish_with_cli(reg, server.url, PREFIX)
            base = {"DLF_REGISTRY": str(reg), "REDIS_URL": server.url, "DLF_REDIS_PREFIX": PREFIX}
            off_env = {**base, "DLF_IMPRESSIONS_ENABLED": "false"}
            on_env = {**base, "DLF_IMPRESSIONS_ENABLED": "true"}
            results: dict[str, list[float]] = {"off": [], "on": []}
            cpu: dict[str, list[float]] = {"off": [], "on": []}  # server CPU us per row
            redis_cpu: dict[str, list[float]] = {"off": [], "on": []}  # redis-server CPU us per row
            with (
                uvicorn_server(off_env, work / "off.log") as off_url,
                uvicorn_server(on_env, work / "on.log") as on_url,
            ):
                urls = {"off": off_url, "on": on_url}
                pids = {name: uvicorn_pid(url) for name, url in urls.items()}
                assert server.proc is not None
                for url in urls.values():  # warm-up: caches, connections, first batches
                    asyncio.run(drive(url, pool, rows, concurrency, 1.0))
                for r in range(rounds):
                    for name in ("off", "on") if r % 2 == 0 else ("on", "off"):
                        rows_before = metric_sum(urls[name], "dlf_request_rows_sum")
                        cpu0, rcpu0 = cpu_seconds(pids[name]), cpu_seconds(server.proc.pid)
                        res = asyncio.run(drive(urls[name], pool, rows, concurrency, seconds))
                        cpu1, rcpu1 = cpu_seconds(pids[name]), cpu_seconds(server.proc.pid)
                        done_rows = metric_sum(urls[name], "dlf_request_rows_sum") - rows_before
                        if res.errors:
                            raise RuntimeError(f"{res.errors} failed requests ({name}, round {r})")
                        results[name].append(res.rows_per_s)
                        cpu[name].append((cpu1 - cpu0) / done_rows * 1e6)
                        redis_cpu[name].append((rcpu1 - rcpu0) / done_rows * 1e6)
                        print(
                            f"round {r + 1} logging {name}: {res.rows_per_s:,.0f} rows/s, "
                            f"server {cpu[name][-1]:.0f} us CPU/row, redis {redis_cpu[name][-1]:.1f} us CPU/row",
                            flush=True,
                        )
                batch_mean = {
                    name: metric_sum(url, "dlf_batch_rows_sum") / metric_sum(url, "dlf_batch_rows_count")
                    for name, url in urls.items()
                }
                logged = metric_sum(on_url, "dlf_impressions_logged_total")
                dropped = metric_sum(on_url, "dlf_impressions_dropped_total")
                served = metric_sum(on_url, "dlf_request_rows_sum")
            with redis.Redis.from_url(server.url) as client:
                stream_entries = client.xlen(f"{PREFIX}impressions")
        finally:
            server.stop()
    off, on = statistics.median(results["off"]), statistics.median(results["on"])
    cost = 1.0 - on / off
    med = {k: statistics.median(v) for k, v in cpu.items()}
    rmed = {k: statistics.median(v) for k, v in redis_cpu.items()}
    cpu_cost = med["on"] / med["off"] - 1.0
    total_cost = (med["on"] + rmed["on"]) / (med["off"] + rmed["off"]) - 1.0
    lines = [
        f"{concurrency} concurrent clients x {rows} rows per request, {rounds} alternating rounds of "
        f"{seconds:.0f} s, one uvicorn worker each, ORT 1 intra-op thread, Redis feature store in both, "
        f"bundle: {'tiny test bundle' if registry is None else registry}.",
        "",
        "| impression logging | rows/s (median) | rows/s per round | server CPU us/row (median) "
        "| redis-server CPU us/row (median) |",
        "|---|---|---|---|---|",
        f"| off | {off:,.0f} | {', '.join(f'{x:,.0f}' for x in results['off'])} | {med['off']:.1f} "
        f"| {rmed['off']:.2f} |",
        f"| on | {on:,.0f} | {', '.join(f'{x:,.0f}' for x in results['on'])} | {med['on']:.1f} "
        f"| {rmed['on']:.2f} |",
        "",
        f"Throughput cost of logging: **{cost:.1%}** (median rows/s on/off = {on / off:.3f}). "
        f"CPU cost per row: service **{cpu_cost:+.1%}**, service + redis-server {total_cost:+.1%}. The 'on' server "
        f"logged {logged:,.0f} of {served:,.0f} served rows ({dropped:,.0f} dropped) in "
        f"{stream_entries:,} stream entries. Mean rows per ONNX Runtime batch: off "
        f"{batch_mean['off']:.0f}, on {batch_mean['on']:.0f}.",
    ]
    table = "\n".join(lines) + "\n"
    print(table)
    if out is not None:
        out.write_text(table)


if __name__ == "__main__":
    app()
