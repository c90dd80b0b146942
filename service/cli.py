"""Command line of the service: ``serve``, ``publish-vocab`` and ``example``.

python -m service.cli serve --host 0.0.0.0 --port 8000
python -m service.cli publish-vocab --registry registry --redis-url redis://localhost:6379/0
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from service.contract import load_schema, load_vocab, resolve_current
from service.redis_store import connect, publish_vocab

app = typer.Typer(add_completion=False, no_args_is_help=True, help="DLF click-probability service.")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    log_level: Annotated[
        str | None,
        typer.Option(help="Log level of the service and uvicorn (default: DLF_LOG_LEVEL, info)."),
    ] = None,
    access_log: Annotated[
        bool,
        typer.Option(
            help="Also uvicorn's own plain request line (the JSON service.access line is written at level info)."
        ),
    ] = False,
    processes: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Service processes on this port (SO_REUSEPORT; 0 = one per usable core; "
            "default: DLF_PROCESSES, 0). See service/processes.py.",
        ),
    ] = None,
) -> None:
    """Run the HTTP service; every other setting comes from DLF_* environment variables and REDIS_URL.

    With --processes N > 1, N copies of the app share the port (metrics added up, reloads
    followed by all, inference threads split between them; service/processes.py). To scale
    beyond one machine, run replicas behind a load balancer (docs/deploy.md).
    """
    import uvicorn

    from service.logs import configure_logging
    from service.settings import Settings

    if log_level is not None:  # the app factory reads its settings again: make them agree
        os.environ["DLF_LOG_LEVEL"] = log_level.lower()
    if processes is not None:
        os.environ["DLF_PROCESSES"] = str(processes)
    try:
        settings = Settings()
    except ValidationError as exc:  # e.g. --log-level loud: name the setting, no traceback
        raise typer.BadParameter(str(exc)) from None
    configure_logging(settings.log_format, settings.log_level)
    group = settings.resolved_processes
    if group > 1:
        from service.processes import serve_processes

        raise typer.Exit(serve_processes(host, port, group, settings.log_level, access_log))
    from service.http_protocol import http_protocol

    uvicorn.run(
        "service.app:app_factory",
        factory=True,
        http=http_protocol(),
        host=host,
        port=port,
        log_level=settings.log_level,
        access_log=access_log,
    )


@app.command("publish-vocab")
def publish_vocab_cmd(
    registry: Annotated[Path, typer.Option(help="Bundle registry directory.")],
    redis_url: Annotated[str, typer.Option(envvar="REDIS_URL", help="e.g. redis://localhost:6379/0")],
    version: Annotated[str | None, typer.Option(help="Bundle version (default: CURRENT / newest).")] = None,
    prefix: Annotated[str, typer.Option(envvar="DLF_REDIS_PREFIX", help="Redis key prefix.")] = "dlf:",
    chunk_size: Annotated[int, typer.Option(min=1, help="Values per pipelined HSET.")] = 10_000,
    cluster: Annotated[
        bool, typer.Option(envvar="DLF_REDIS_CLUSTER", help="--redis-url is a node of a Redis Cluster.")
    ] = False,
) -> None:
    """Copy a bundle's vocabularies into Redis hashes <prefix>vocab:{<version>}:<field>, then set the marker."""
    chosen = version or resolve_current(registry)
    if chosen is None:
        raise typer.BadParameter(f"no bundle found in {registry}", param_hint="--registry")
    bundle_dir = registry / chosen
    if not (bundle_dir / "schema.json").exists():
        raise typer.BadParameter(f"no bundle {chosen!r} in {registry}", param_hint="--version")

    async def _run() -> dict[str, int]:
        client = connect(redis_url, timeout_s=5.0, cluster=cluster)
        try:
            return await publish_vocab(client, bundle_dir, prefix, chunk_size)
        finally:
            await client.aclose()

    counts = asyncio.run(_run())
    typer.echo(json.dumps({"version": chosen, "prefix": prefix, "fields": counts}))


def example_body(bundle_dir: Path) -> dict:
    """A two-record request built from the bundle's own vocabulary (first known value per field)."""
    schema = load_schema(bundle_dir)
    record: dict = {}
    for f in schema.fields:
        if f.kind == "categorical":
            record[f.name] = next(iter(load_vocab(bundle_dir, f)), "unknown")
        else:
            record[f.name] = 1.0
    other = {**record, schema.categorical[0].name: "a-value-never-seen"} if schema.categorical else record
    return {"records": [record, other]}


@app.command()
def example(
    registry: Annotated[Path, typer.Option(help="Bundle registry directory.")] = Path("registry"),
    url: Annotated[str, typer.Option(help="Base URL of the running service.")] = "http://127.0.0.1:8000",
) -> None:
    """Print a ready-to-paste curl request for the bundle being served."""
    chosen = resolve_current(registry)
    if chosen is None:
        raise typer.BadParameter(f"no bundle found in {registry}", param_hint="--registry")
    body = json.dumps(example_body(registry / chosen))
    typer.echo(f"model {chosen}; once the server is up, try:\n")
    typer.echo(f"curl -s -X POST {url}/predict -H 'Content-Type: application/json' -d '{body}'\n")


if __name__ == "__main__":
    app()
