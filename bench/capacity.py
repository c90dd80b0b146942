"""The measured inputs of docs/scaling.md, in one run on this machine.

    .venv/bin/python -m bench.capacity [--registry R] [--seconds 8] [--rows-per-request 50]

1. One uvicorn worker (ORT 1 thread) over a private redis-server: rows/s and
   latency for ranking-sized requests, first with a cold LRU cache for ``--seconds``
   then warm; Redis commands and round trips per request from INFO commandstats;
   the LRU cache hit rate from the service's own /metrics.
2. The Redis side alone: ``redis-benchmark`` replaying the service's lookup (one
   HMGET of --keys-per-field keys per field inside MULTI/EXEC is approximated by
   pipelined HMGETs), i.e. lookups/s one Redis core can answer.
3. The bundle's size on disk.

Without --registry it trains the small DLF on generated data first (bench.serving_load).
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import typer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))
from serving_support import RedisServer, publish_with_cli, uvicorn_server  # noqa: E402

from bench.serving_load import drive, ensure_registry, sample_rows  # noqa: E402
from service.contract import load_schema, resolve_current, vocab_key  # noqa: E402

app = typer.Typer(add_completion=False)
LOOKUP_COMMANDS = ("multi", "exec", "exists", "hmget")


def metric(text: str, name: str) -> float:
    m = re.search(rf"^{name} ([0-9.e+]+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def redis_lookups_per_s(port: int, key: str, fields: int, keys_per_field: int) -> float:
    """HMGET calls/s of one redis-server core (50 clients, pipeline = fields: one request's lookup)."""
    args = [f"k{i}" for i in range(keys_per_field)]
    cmd = [
        "redis-benchmark",
        "-p",
        str(port),
        "-q",
        "-n",
        "200000",
        "-c",
        "50",
        "-P",
        str(fields),
        "HMGET",
        key,
        *args,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300).stdout
    m = re.search(r"([0-9.]+) requests per second", out.replace("\r", "\n"))
    return float(m.group(1)) / fields if m else float("nan")  # one lookup = `fields` HMGETs


@app.command()
def main(
    registry: Path | None = typer.Option(None, help="bundle registry (default: train a small DLF first)"),
    seconds: float = typer.Option(8.0, help="seconds of load per phase"),
    concurrency: int = typer.Option(16, help="concurrent HTTP clients"),
    rows_per_request: int = typer.Option(50, help="rows per request (a ranking call)"),
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        reg = ensure_registry(registry, work)
        bundle = reg / str(resolve_current(reg))
        schema = load_schema(bundle)
        rows = sample_rows(reg, 20_000)
        redis = RedisServer(work)
        redis.start()
        facts: dict = {
            "bundle_mb": round(sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file()) / 2**20, 2),
            "categorical_fields": len(schema.categorical),
            "vocab_sizes": {f.name: f.vocab_size for f in schema.categorical},
            "rows_per_request": rows_per_request,
            "concurrency": concurrency,
        }
        try:
            publish_with_cli(reg, redis.url, "cap:")
            env = {
                "DLF_REGISTRY": str(reg),
                "REDIS_URL": redis.url,
                "DLF_REDIS_PREFIX": "cap:",
                "DLF_LOG_FORMAT": "text",
            }
            with uvicorn_server(env, work / "uvicorn.log") as url:
                for phase in ("cold", "warm"):
                    before = redis.command_calls()
                    result = asyncio.run(drive(url, rows, rows_per_request, concurrency, seconds))
                    after = redis.command_calls()
                    requests = result.rows_per_s * seconds / rows_per_request
                    calls = {c: after.get(c, 0) - before.get(c, 0) for c in LOOKUP_COMMANDS}
                    text = httpx.get(f"{url}/metrics").text
                    facts[phase] = {
                        "rows_per_s": round(result.rows_per_s),
                        "p50_ms": round(result.p50_ms, 1),
                        "p99_ms": round(result.p99_ms, 1),
                        "errors": result.errors,
                        "requests": round(requests),
                        "redis_round_trips_per_request": round(calls["exec"] / max(requests, 1), 3),
                        "redis_commands_per_request": round(sum(calls.values()) / max(requests, 1), 3),
                        "cache_hit_rate_cumulative": round(
                            metric(text, "dlf_feature_cache_hits_total")
                            / max(
                                1.0,
                                metric(text, "dlf_feature_cache_hits_total")
                                + metric(text, "dlf_feature_cache_misses_total"),
                            ),
                            4,
                        ),
                    }
                    print(phase, json.dumps(facts[phase]), flush=True)
            key = vocab_key("cap:", schema.version, schema.categorical[0].name)
            facts["redis_lookups_per_s_one_core"] = round(
                redis_lookups_per_s(redis.port, key, len(schema.categorical), max(1, rows_per_request // 5))
            )
        finally:
            redis.stop()
    print(json.dumps(facts, indent=2))


if __name__ == "__main__":
    app()
