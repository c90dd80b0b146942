"""``serve --processes N``: N copies of the app on one port, one Prometheus view, one model version.

Why: one event loop runs all per-request Python under one GIL. At 1 row x 32 connections it
saturates one core while the other idles (docs/benchmarks.md), and no batching helps there.

- **Sockets.** Each process binds its own listening socket with ``SO_REUSEPORT``, so the kernel
  spreads connections over the processes. (One shared socket, as ``uvicorn --workers`` uses,
  let one process accept every connection of a burst: measured, all 32 went to one.)
- **Metrics.** A fresh ``PROMETHEUS_MULTIPROC_DIR`` per run; ``/metrics`` of any process adds up
  all of them (prometheus-client's multiprocess mode, see service/metrics.py).
- **Model version.** A reload or rollback through ``/admin`` in one process is written to
  ``<group dir>/target``; the others poll it and load the same version (service/reloader.py).
  CURRENT polling and Redis pub/sub notices reach every process by themselves.
- **Inference threads.** usable cores / N per process, unless ``DLF_INFERENCE_WORKERS`` is set;
  each process publishes how many inference calls it runs (service/busy_board.py), so a lone big
  request spreads only onto cores the others are not computing on.
- **Signals.** SIGTERM/SIGINT are passed on as SIGTERM; each process drains like a single one.
  When one process exits, the others are stopped and its exit code is returned, so the
  container's supervisor (Docker, Kubernetes) restarts the whole group.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

from service.busy_board import INDEX_ENV, create_board

log = logging.getLogger(__name__)

GROUP_DIR_ENV = "DLF_PROCESS_GROUP_DIR"  # set by the supervisor for its children only
TARGET_FILE = "target"


def group_dir() -> Path | None:
    """The shared directory of this process group, or None when not started by ``serve_processes``."""
    value = os.environ.get(GROUP_DIR_ENV)
    return Path(value) if value else None


def write_target(version: str) -> None:
    """Tell the other processes of the group to serve ``version`` (temp file + atomic rename)."""
    directory = group_dir()
    if directory is None:
        return
    tmp = directory / f".{TARGET_FILE}.{os.getpid()}"
    tmp.write_text(json.dumps({"version": version, "pid": os.getpid()}))
    tmp.replace(directory / TARGET_FILE)


def read_target(directory: Path) -> tuple[int, str] | None:
    """(mtime_ns, version) of the group's target, or None when nobody reloaded yet."""
    path = directory / TARGET_FILE
    try:
        stamp = path.stat().st_mtime_ns
        return stamp, str(json.loads(path.read_text())["version"])
    except (OSError, ValueError, KeyError):
        return None


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket of its own for this process on a port the whole group shares (``SO_REUSEPORT``)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    return sock


def _child(host: str, port: int, log_level: str, access_log: bool, index: int) -> None:
    import uvicorn

    os.environ[INDEX_ENV] = str(index)  # this process's slot on the busy board

    from service.logs import configure_logging
    from service.settings import Settings

    configure_logging(Settings().log_format, log_level)
    sock = listening_socket(host, port)
    drain = os.environ.get("DLF_DRAIN_TIMEOUT_S")  # deploy/docker/serve.sh's graceful-shutdown bound
    from service.http_protocol import http_protocol

    config = uvicorn.Config(
        "service.app:app_factory",
        factory=True,
        http=http_protocol(),
        log_level=log_level,
        access_log=access_log,
        timeout_graceful_shutdown=int(float(drain)) if drain else None,
    )
    uvicorn.Server(config).run(sockets=[sock])


def serve_processes(host: str, port: int, processes: int, log_level: str, access_log: bool) -> int:
    """Run ``processes`` service processes on ``host:port`` until one exits; returns the exit code."""
    if not hasattr(socket, "SO_REUSEPORT"):
        raise RuntimeError("--processes > 1 needs SO_REUSEPORT (Linux); run replicas instead")
    from prometheus_client import multiprocess

    directory = Path(tempfile.mkdtemp(prefix="dlf-serve-"))
    (directory / "metrics").mkdir()
    create_board(directory, processes)
    env: dict[str, Any] = {
        "PROMETHEUS_MULTIPROC_DIR": str(directory / "metrics"),
        GROUP_DIR_ENV: str(directory),
        "DLF_PROCESSES": str(processes),
        "DLF_LOG_LEVEL": log_level,
    }
    os.environ.update(env)  # spawned children inherit it before anything imports prometheus_client
    ctx = multiprocessing.get_context("spawn")
    children = [
        ctx.Process(target=_child, args=(host, port, log_level, access_log, i), name=f"dlf-serve-{i}")
        for i in range(processes)
    ]
    stopping = False

    def stop_all(signum: int = signal.SIGTERM, _frame: Any = None) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.pid is not None and child.is_alive():
                os.kill(child.pid, signal.SIGTERM)

    previous = {sig: signal.signal(sig, stop_all) for sig in (signal.SIGTERM, signal.SIGINT)}
    code = 0
    try:
        for child in children:
            child.start()
        log.info("serving on %s:%d with %d processes (group dir %s)", host, port, processes, directory)
        wait([c.sentinel for c in children])  # the first exit ends the group
        if not stopping:
            first = next(c for c in children if not c.is_alive())
            log.error("process %s exited with %s: stopping the group", first.pid, first.exitcode)
            status = first.exitcode or 0
            code = status if status > 0 else 128 - status if status < 0 else 1  # an exit of 0 is still unexpected
            stop_all()
        for child in children:
            child.join(30)
            if child.is_alive():
                child.kill()
                child.join()
            asked = stopping and child.exitcode == -signal.SIGTERM  # uvicorn re-raises the SIGTERM it drained on
            if child.exitcode and not asked and not code:
                code = child.exitcode if child.exitcode > 0 else 128 - child.exitcode
            if child.pid is not None:
                multiprocess.mark_process_dead(child.pid)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        shutil.rmtree(directory, ignore_errors=True)
    return code
