"""Cost of impression logging: the same service with the impression log on and off, side by side.

    .venv/bin/python -m bench.impression_cost [--registry R] [--rounds 8] [--seconds 6] \
        [--concurrency 8] [--rows 100] [--out FILE]

Real uvicorn processes over the same bundle and the same private redis-server (Redis
feature store in all); the only difference is ``DLF_IMPRESSIONS_ENABLED``. Each
round drives one "off" and one "on" server AT THE SAME TIME, each from its own
load-generator process (``concurrency`` HTTP clients sending ``rows``-row /predict
requests back to back), so both see the same machine load. Two such pairs are
started, one "off" first and one "on" first, and rounds alternate between them, so
start order cannot favour a side. Reported per configuration: rows/s and the uvicorn
process's CPU time per row (from /proc), medians over rounds, and the median of the
per-round on/off ratios. ``dlf_impressions_logged_total`` and
``dlf_impressions_dropped_total`` of the "on" servers are read back, so a run that
silently dropped impressions cannot pass as cheap. Without --registry the tiny test
bundle is used: its inference is nearly free, so logging's share of the cost is the
largest it can be (a conservative bound for real models).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import redis
import typer
from prometheus_client.parser import text_string_to_metric_families

# Process helpers shared with the end-to-end tests (real uvicorn / redis-server on free ports).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))
from serving_support import REPO, RedisServer, publish_with_cli, uvicorn_server  # noqa: E402

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


def start_generator(
    url: str, registry: Path, rows: int, concurrency: int, seconds: float
) -> subprocess.Popen:
    """A load-generator process of its own (this module with --drive); prints its result as JSON."""
    cmd = [sys.executable, "-m", "bench.impression_cost", "--drive", url, "--registry", str(registry)]
    cmd += ["--rows", str(rows), "--concurrency", str(concurrency), "--seconds", str(seconds)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)


def run_drive(url: str, registry: Path, rows: int, concurrency: int, seconds: float) -> None:
    pool = sample_rows(registry, 4000)
    with contextlib.suppress(statistics.StatisticsError):  # warm-up (too few answers for quantiles is fine)
        asyncio.run(drive(url, pool, rows, concurrency, 2.0))
    res = asyncio.run(drive(url, pool, rows, concurrency, seconds))
    print(json.dumps({"rows_per_s": res.rows_per_s, "errors": res.errors, "p50_ms": res.p50_ms}))


@app.command()
def main(
    registry: Path | None = typer.Option(None, help="bundle registry (default: the tiny test bundle)"),
    rounds: int = typer.Option(8, min=2, help="rounds (one off + one on server driven at once in each)"),
    seconds: float = typer.Option(6.0, help="seconds of load per round"),
    concurrency: int = typer.Option(8, help="concurrent HTTP clients per server"),
    rows: int = typer.Option(100, help="rows per /predict request"),
    out: Path | None = typer.Option(None, help="write the markdown result here"),
    drive_url: str | None = typer.Option(None, "--drive", hidden=True, help="internal: be a load generator"),
) -> None:
    if drive_url is not None:
        assert registry is not None
        run_drive(drive_url, registry, rows, concurrency, seconds)
        return
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        reg = registry
        if reg is None:
            reg = work / "registry"
            write_tiny_bundle(reg)
        server = RedisServer(work)
        server.start()
        stack.callback(server.stop)
        publish_with_cli(reg, server.url, PREFIX)
        base = {"DLF_REGISTRY": str(reg), "REDIS_URL": server.url, "DLF_REDIS_PREFIX": PREFIX}
        env = {
            "off": {**base, "DLF_IMPRESSIONS_ENABLED": "false"},
            "on": {**base, "DLF_IMPRESSIONS_ENABLED": "true"},
        }
        pairs = []  # pair 0 started off-then-on, pair 1 on-then-off
        for order in (("off", "on"), ("on", "off")):
            urls = {
                n: stack.enter_context(uvicorn_server(env[n], work / f"{n}-{len(pairs)}.log")) for n in order
            }
            pairs.append(urls)
        pids = {u: uvicorn_pid(u) for urls in pairs for u in urls.values()}
        rps: dict[str, list[float]] = {"off": [], "on": []}
        cpu: dict[str, list[float]] = {"off": [], "on": []}  # uvicorn CPU us per row
        for r in range(rounds):
            urls = pairs[r % 2]
            before = {
                n: (metric_sum(u, "dlf_request_rows_sum"), cpu_seconds(pids[u])) for n, u in urls.items()
            }
            gens = {n: start_generator(u, reg, rows, concurrency, seconds) for n, u in urls.items()}
            outs = {n: json.loads(g.communicate(timeout=seconds + 120)[0]) for n, g in gens.items()}
            for n, u in urls.items():
                if outs[n]["errors"]:
                    raise RuntimeError(f"{outs[n]['errors']} failed requests ({n}, round {r + 1})")
                served = metric_sum(u, "dlf_request_rows_sum") - before[n][0]
                rps[n].append(outs[n]["rows_per_s"])
                cpu[n].append((cpu_seconds(pids[u]) - before[n][1]) / served * 1e6)
            print(
                f"round {r + 1} (pair {r % 2}): off {rps['off'][-1]:,.0f} rows/s ({cpu['off'][-1]:.1f} us "
                f"CPU/row), on {rps['on'][-1]:,.0f} rows/s ({cpu['on'][-1]:.1f} us CPU/row)",
                flush=True,
            )
        on_urls = [urls["on"] for urls in pairs]
        logged = sum(metric_sum(u, "dlf_impressions_logged_total") for u in on_urls)
        dropped = sum(metric_sum(u, "dlf_impressions_dropped_total") for u in on_urls)
        served_on = sum(metric_sum(u, "dlf_request_rows_sum") for u in on_urls)
        with redis.Redis.from_url(server.url) as client:
            stream_entries = client.xlen(f"{PREFIX}impressions")
    ratio = statistics.median(on / off for on, off in zip(rps["on"], rps["off"], strict=True))
    cpu_ratio = statistics.median(on / off for on, off in zip(cpu["on"], cpu["off"], strict=True))
    med = {n: statistics.median(v) for n, v in rps.items()}
    cmed = {n: statistics.median(v) for n, v in cpu.items()}
    lines = [
        f"{concurrency} HTTP clients x {rows} rows per request per server; {rounds} rounds of {seconds:.0f} s, "
        "in each an 'off' and an 'on' server driven at the same time, each by its own load-generator "
        "process (two pairs, started in opposite order, alternating); one uvicorn worker each, ORT 1 "
        "intra-op thread, Redis feature store in all, bundle: "
        f"{'tiny test bundle' if registry is None else registry}.",
        "",
        "| impression logging | rows/s (median) | rows/s per round | uvicorn CPU us/row (median) |",
        "|---|---|---|---|",
    ]
    for n in ("off", "on"):
        per_round = ", ".join(f"{x:,.0f}" for x in rps[n])
        lines.append(f"| {n} | {med[n]:,.0f} | {per_round} | {cmed[n]:.1f} |")
    lines += [
        "",
        f"Throughput with logging on / off, median of per-round ratios: **{ratio:.3f}** "
        f"(cost {1 - ratio:.1%}); CPU per row on / off: {cpu_ratio:.3f} (cost {cpu_ratio - 1:+.1%}). "
        f"The 'on' servers logged {logged:,.0f} of {served_on:,.0f} served rows ({dropped:,.0f} dropped) "
        f"in {stream_entries:,} stream entries.",
    ]
    table = "\n".join(lines) + "\n"
    print(table)
    if out is not None:
        out.write_text(table)


if __name__ == "__main__":
    app()
