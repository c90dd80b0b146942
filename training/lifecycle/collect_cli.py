"""``python -m training.cli collect``: impressions + feedback -> labelled Parquet shards.

Exit status: 0 (also when nothing new was ready), 2 bad input or Redis unreachable.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer


def collect_cmd(
    out: Annotated[Path, typer.Option(help="shard directory (keeps collect-state.json and schema.yaml)")],
    registry: Annotated[
        Path | None, typer.Option(envvar="DLF_REGISTRY", help="fields of this registry's CURRENT bundle")
    ] = None,
    bundle: Annotated[Path | None, typer.Option(help="fields of this bundle instead of CURRENT")] = None,
    redis_url: Annotated[str, typer.Option(envvar="REDIS_URL", help="Redis holding the impression log")] = (
        "redis://localhost:6379/0"
    ),
    prefix: Annotated[str, typer.Option(envvar="DLF_REDIS_PREFIX", help="Redis key prefix")] = "dlf:",
    label_window: Annotated[
        float, typer.Option(min=0, help="seconds a click may come after the impression")
    ] = 3600.0,
    shard_rows: Annotated[int, typer.Option(min=1, help="rows per shard at most")] = 1_000_000,
    cluster: Annotated[
        bool, typer.Option("--cluster", envvar="DLF_REDIS_CLUSTER", help="the URL names a Redis Cluster node")
    ] = False,
) -> None:
    """Join impressions whose label window has closed with their feedback; append Parquet shards."""
    import redis

    from training.lifecycle.collect import collect

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        result = collect(
            redis_url,
            out,
            registry=registry,
            bundle=bundle,
            prefix=prefix,
            label_window_s=label_window,
            shard_rows=shard_rows,
            cluster=cluster,
        )
    except (ValueError, FileNotFoundError, redis.RedisError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e
    typer.echo(json.dumps(result.summary(), indent=2))


def register(app: typer.Typer) -> None:
    app.command("collect")(collect_cmd)
