"""Append what was served as JSON lines, off the request path, bounded by size-based rotation.

The request handler only puts a dict on a queue; a daemon thread serialises
and appends through ``logging.handlers.RotatingFileHandler`` (at most
``max_bytes`` per file, ``backups`` rotated files), so the log can no longer
grow without bound. Entries that find the queue full are dropped and counted
(``dropped`` and the ``on_drop`` callback, exported as
``dlf_request_log_dropped_total``). Each line: request_id, time (UTC ISO),
model_version, degraded, records (raw, after context merge) and probabilities.
The impression stream (service/impressions.py) is what the closed loop reads;
this file is for humans and ad-hoc debugging.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Callable
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_STOP = object()


class RequestLogger:
    """Background JSON-lines writer; ``log`` never blocks on disk, ``close`` drains the queue."""

    def __init__(
        self,
        path: str | Path,
        max_queue: int = 10_000,
        *,
        max_bytes: int = 64 * 1024 * 1024,
        backups: int = 3,
        on_drop: Callable[[], None] | None = None,
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_queue)
        self.dropped = 0
        self._on_drop = on_drop
        # backupCount=0 would make RotatingFileHandler never rotate: keep one backup at least
        self._handler = RotatingFileHandler(
            self.path, maxBytes=max_bytes, backupCount=max(backups, 1), encoding="utf-8", delay=True
        )
        self._handler.setFormatter(logging.Formatter("%(message)s"))
        self._thread = threading.Thread(target=self._loop, name="dlf-request-log", daemon=True)
        self._thread.start()

    def log(self, entry: dict[str, Any]) -> None:
        try:
            self._queue.put_nowait(entry)
        except queue.Full:  # never slow down serving for the log
            self.dropped += 1
            if self._on_drop is not None:
                self._on_drop()

    def _loop(self) -> None:
        try:
            while True:
                entry = self._queue.get()
                if entry is _STOP:
                    break
                try:
                    line = json.dumps(entry, default=str)
                except (TypeError, ValueError) as exc:
                    log.warning("request log entry not written: %s", exc)
                    continue
                self._handler.emit(logging.makeLogRecord({"msg": line, "args": None}))
        finally:
            self._handler.close()

    def close(self, timeout: float = 5.0) -> None:
        self._queue.put(_STOP)
        self._thread.join(timeout)
