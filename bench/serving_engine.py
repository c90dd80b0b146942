"""The serving benchmark: this service vs a naive peer vs the raw ONNX Runtime ceiling, one sitting.

    .venv/bin/python -m bench.serving_engine --registry /tmp/issue11/registry [--seconds 6]

On one bundle (the registry's CURRENT unless --version), with Frappe rows read from
--data, it runs:

1. the raw-ORT ceiling (bench/ort_ceiling.py: one session per core, one process each), right
   before and right after the cells of each request size (their mean is the ceiling: on a
   shared VM the machine's speed drifts over the minute those cells take);
2. this service (``python -m service.cli serve``, Redis backend: the vocab is published to
   --redis-url under a fresh key prefix, removed afterwards) and the naive peer
   (bench/naive_peer.py under uvicorn), both up at once, cell after cell alternating, so
   neighbours' noise hits both alike; rows/request x connections grid, load from
   bench/load_client.py in a separate process, closed loop;
3. an overload run: open-loop load at --overload-factor x the service's measured capacity;
   before the grid and right before this run, bench/machine_noise.py times fixed CPU work for
   3 s while both servers idle, so the report says how steady the shared CPU was; where this
   process may trace the scheduler (root), the probes name what stalled the CPU and the
   overload's slowest admitted answers are lined up with what else ran (bench/sched_trace.py);
4. robustness (a private redis-server, not the shared one): 10 hot reloads under load, then
   Redis stopped under load; every status is counted.

It writes the results section of docs/benchmarks.md (between the serving-engine markers)
and two plots into docs/img/.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import typer

from bench import machine_noise, sched_trace
from bench.report import write_report
from service.batcher import usable_cores
from service.contract import resolve_current

REPO = Path(__file__).resolve().parents[1]
# the Frappe rows the bodies are drawn from; DLF_BENCH_FRAPPE points elsewhere (a GPU host, say)
FRAPPE = Path(os.environ.get("DLF_BENCH_FRAPPE", REPO.parent / "shared" / "data" / "frappe" / "frappe.dev.libfm"))
PY = sys.executable
app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@dataclass
class Cell:
    server: str
    rows: int
    conns: int
    result: dict[str, Any]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def frappe_records(path: Path, n: int, seed: int = 0) -> list[dict[str, str]]:
    """Real Frappe rows as a client sends them: {field: raw value}, in random order."""
    from training.data.spec import FRAPPE_FIELDS

    lines = path.read_text().splitlines()
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(lines), size=min(n, len(lines)), replace=False)
    records = []
    for i in picked:
        _, *tokens = lines[i].split()
        records.append({f: t.split(":")[0] for f, t in zip(FRAPPE_FIELDS, tokens, strict=True)})
    return records


def write_bodies(records: list[dict], rows: int, out: Path, count: int = 64) -> Path:
    """``count`` distinct bodies of ``rows`` records each, one JSON per line."""
    rng = np.random.default_rng(rows)
    with out.open("w") as fh:
        for _ in range(count):
            start = int(rng.integers(0, len(records) - rows))
            fh.write(json.dumps({"records": records[start : start + rows]}) + "\n")
    return out


@contextmanager
def server(cmd: list[str], env: dict[str, str], log: Path, timeout: float = 120.0) -> Iterator[str]:
    """Start an HTTP server process on a free port; yields its URL once /predict answers."""
    port = free_port()
    # the repo first, then whatever the caller had (a GPU host's carried packages, say)
    pythonpath = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    full = {**os.environ, "PYTHONPATH": pythonpath, **env}
    with log.open("w") as fh:
        proc = subprocess.Popen(
            [*cmd, "--port", str(port)], env=full, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{cmd} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/openapi.json", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{cmd} not up after {timeout}s:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield url
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_ready(url: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if httpx.get(f"{url}/readyz", timeout=2.0).status_code == 200:
            return
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout}s")


def load(
    url: str, bodies: Path, rows: int, conns: int, seconds: float, warmup: float, **extra: Any
) -> dict[str, Any]:
    """One cell: bench/load_client.py in its own process; returns its summary."""
    cmd = [PY, "-m", "bench.load_client", "--url", url, "--bodies", str(bodies)]
    cmd += ["--rows-per-request", str(rows), "--connections", str(conns)]
    cmd += ["--seconds", str(seconds), "--warmup", str(warmup)]
    for key, value in extra.items():
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=seconds + warmup + 120)
    if out.returncode != 0:
        raise RuntimeError(f"load client failed: {out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def ceiling(bundle: Path, batch: int, seconds: float) -> dict[str, Any]:
    cmd = [PY, "-m", "bench.ort_ceiling", "--bundle", str(bundle), "--batch", str(batch)]
    cmd += ["--seconds", str(seconds)]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=seconds + 180, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def around(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """The ceiling of one request size: the mean of the runs before and after its cells, both kept."""
    return {
        "rows_per_s": (before["rows_per_s"] + after["rows_per_s"]) / 2,
        "before": before["rows_per_s"],
        "after": after["rows_per_s"],
        "procs": before["procs"],
    }


def publish(registry: Path, version: str, redis_url: str, prefix: str) -> None:
    cmd = [PY, "-m", "service.cli", "publish-vocab", "--registry", str(registry), "--version", version]
    cmd += ["--redis-url", redis_url, "--prefix", prefix]
    subprocess.run(cmd, cwd=REPO, check=True, capture_output=True, timeout=300)


def drop_prefix(redis_url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    for i in range(0, len(keys), 1000):
        client.delete(*keys[i : i + 1000])
    client.close()


def noise(when: str, seconds: float = 3.0) -> dict[str, Any]:
    """bench/machine_noise.py while both servers idle: how steady the CPU the cells share is
    (with the cause of each stall where this process may trace the scheduler)."""
    profile = machine_noise.probe(seconds, trace=sched_trace.available(mount=True) is not None)
    print(f"machine noise {when}: {profile.line()}", flush=True)
    return asdict(profile)


def load_average() -> str:
    return Path("/proc/loadavg").read_text().split(" ")[:3].__str__()


def service_cmd(processes: int = 0) -> list[str]:
    """``serve`` as a user runs it; ``processes`` 0 keeps its default (one process per usable core)."""
    cmd = [PY, "-m", "service.cli", "serve", "--host", "127.0.0.1", "--log-level", "warning"]
    return cmd + (["--processes", str(processes)] if processes else [])


def naive_cmd() -> list[str]:
    cmd = [PY, "-m", "uvicorn", "bench.naive_peer:app", "--host", "127.0.0.1", "--log-level", "warning"]
    return cmd + ["--no-access-log"]


@app.command()
def main(
    registry: Path = typer.Option(..., help="bundle registry (the Frappe default bundle)"),
    version: str | None = typer.Option(None, help="bundle version (default: CURRENT)"),
    data: Path = typer.Option(FRAPPE, help="Frappe libfm file the request rows come from"),
    seconds: float = typer.Option(6.0, help="measured seconds per cell"),
    warmup: float = typer.Option(1.0, help="unmeasured seconds before each cell"),
    rows: str = typer.Option("1,10,100,1000", help="rows per request"),
    conns: str = typer.Option("1,8,32", help="concurrent connections"),
    overload_rows: int = typer.Option(100, help="rows per request of the overload run"),
    overload_factor: float = typer.Option(2.0, help="overload rate / measured capacity"),
    redis_url: str = typer.Option("redis://127.0.0.1:6379/0", help="Redis of the measured service"),
    timeout: float = typer.Option(15.0, help="client timeout per request, seconds"),
    robustness: bool = typer.Option(True, help="also run hot reloads + Redis stop under load"),
    doc: Path = typer.Option(REPO / "docs" / "benchmarks.md", help="markdown file to update"),
    img: Path = typer.Option(REPO / "docs" / "img", help="where the PNG plots go"),
    raw: Path | None = typer.Option(None, help="also dump every number as JSON here"),
    service_processes: int = typer.Option(
        0, min=0, help="run the service as `serve --processes N` (one port, N event loops; 0 = its default)"
    ),
) -> None:
    version = version or resolve_current(registry)
    if version is None:
        raise typer.BadParameter(f"no bundle in {registry}", param_hint="--registry")
    bundle = registry / version
    row_sizes = [int(x) for x in rows.split(",")]
    conn_counts = [int(x) for x in conns.split(",")]
    started = time.time()
    meta: dict[str, Any] = {
        "bundle": version,
        "registry": str(registry),
        "cores": usable_cores(),
        "load_before": load_average(),
        "seconds": seconds,
        "timeout": timeout,
        "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": " ".join(["python -m bench.serving_engine", *sys.argv[1:]]),
        "service_processes": service_processes or usable_cores(),
    }
    with tempfile.TemporaryDirectory(prefix="dlf-bench-") as tmp:
        work = Path(tmp)
        records = frappe_records(data, 20_000)
        bodies = {
            r: write_bodies(records, r, work / f"bodies-{r}.jsonl") for r in set(row_sizes + [overload_rows])
        }

        ceilings: dict[str, Any] = {}  # measured around each row size's cells: same neighbours
        prefix = f"bench-{uuid.uuid4().hex[:10]}:"
        publish(registry, version, redis_url, prefix)
        service_env = {
            "DLF_REGISTRY": str(registry),
            "DLF_MODEL_VERSION": version,
            "REDIS_URL": redis_url,
            "DLF_REDIS_PREFIX": prefix,
            "DLF_RELOAD_PUBSUB": "false",
        }
        cells: list[Cell] = []
        try:
            with (
                server(service_cmd(service_processes), service_env, work / "service.log") as svc,
                server(naive_cmd(), {"NAIVE_BUNDLE": str(bundle)}, work / "naive.log") as naive,
            ):
                wait_ready(svc)
                meta["service_info"] = httpx.get(f"{svc}/info").json().get("batching")
                meta["noise_start"] = noise("before the grid")
                for r in row_sizes:
                    before = ceiling(bundle, r, max(2.0, seconds / 2))
                    print(f"ceiling  {r:5d} rows: {before['rows_per_s']:9,.0f} rows/s before ({before['procs']} processes)")
                    for c in conn_counts:
                        for name, url in (("service", svc), ("naive", naive)):
                            res = load(url, bodies[r], r, c, seconds, warmup, timeout=timeout)
                            cells.append(Cell(name, r, c, res))
                            print(
                                f"{name:8s} {r:5d} rows x {c:3d} conns: {res['rows_per_s']:9,.0f} rows/s "
                                f"p50 {res['p50_ms'] or 0:7.1f} ms p99 {res['p99_ms'] or 0:7.1f} ms "
                                f"503s {res['status_503']} timeouts {res['timeouts']} errors {res['errors']}",
                                flush=True,
                            )
                    after = ceiling(bundle, r, max(2.0, seconds / 2))
                    ceilings[str(r)] = around(before, after)
                    print(f"ceiling  {r:5d} rows: {after['rows_per_s']:9,.0f} rows/s after", flush=True)
                meta["noise_before_overload"] = noise("before the overload")
                overload = run_overload(
                    svc,
                    naive,
                    cells,
                    bodies[overload_rows],
                    overload_rows,
                    overload_factor,
                    seconds,
                    warmup,
                    timeout,
                )
                meta["metrics_after"] = scrape(svc)
        finally:
            drop_prefix(redis_url, prefix)
        robust = run_robustness(bundle, work, bodies[10], seconds, service_processes) if robustness else None
    meta["load_after"] = load_average()
    meta["minutes"] = (time.time() - started) / 60
    result = {
        "meta": meta,
        "ceilings": ceilings,
        "cells": [c.__dict__ for c in cells],
        "overload": overload,
        "robustness": robust,
    }
    if raw is not None:
        raw.write_text(json.dumps(result, indent=1))
    write_report(result, doc, img)
    print(f"wrote {doc} and plots in {img} ({meta['minutes']:.1f} min)")


def scrape(url: str) -> dict[str, float]:
    wanted = (
        "dlf_rejected_requests_total",
        "dlf_dropped_requests_total",
        "dlf_batch_rows_count",
        "dlf_batch_rows_sum",
        "dlf_inference_workers",
    )
    out: dict[str, float] = {}
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        name, _, value = line.partition(" ")
        if name in wanted:
            out[name] = float(value)
    return out


def run_overload(
    svc: str,
    naive: str,
    cells: list[Cell],
    bodies: Path,
    rows: int,
    factor: float,
    seconds: float,
    warmup: float,
    timeout: float,
) -> dict[str, Any]:
    """Open loop at ``factor`` x the best closed-loop request rate the service reached at ``rows``."""
    at_size = [c for c in cells if c.server == "service" and c.rows == rows]
    capacity = max(c.result["rows_per_s"] for c in at_size) / rows  # requests/s
    unloaded = min(at_size, key=lambda c: c.conns).result
    rate = factor * capacity
    print(f"overload: {rate:.1f} req/s of {rows} rows ({factor}x capacity {capacity:.1f} req/s)", flush=True)
    out = {
        "rows": rows,
        "capacity_req_s": capacity,
        "rate_req_s": rate,
        "unloaded_p99_ms": unloaded["p99_ms"],
    }
    for name, url in (("service", svc), ("naive", naive)):
        traced = name == "service" and sched_trace.available(mount=True) is not None
        with sched_trace.sched_trace() if traced else nullcontext([]) as runs:
            res = load(url, bodies, rows, 512, seconds, warmup, rate=rate, timeout=timeout)
        out[name] = res
        if traced:  # what the slowest admitted answers had against them (the overload line's p99)
            out["service_slowest"] = sched_trace.slowest_line(res, runs)
            print(f"  service: {out['service_slowest']}", flush=True)
        print(
            f"  {name}: ok {res['ok']} 503 {res['status_503']} (p99 {res['p99_503_ms']} ms) "
            f"timeouts {res['timeouts']} admitted p99 {res['p99_ms']} ms",
            flush=True,
        )
    return out


def run_robustness(bundle: Path, work: Path, bodies: Path, seconds: float, processes: int = 0) -> dict[str, Any]:
    from bench.robustness import reloads_and_redis_outage

    return reloads_and_redis_outage(bundle, work / "robust", bodies, seconds, server, load, processes)


if __name__ == "__main__":
    app()
