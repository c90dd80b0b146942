"""Append what was served as JSON lines, off the request path, so clicks can be joined later.

The request handler only puts a dict on a queue; a daemon thread serialises
and appends. Each line: request_id, time (UTC ISO), model_version, degraded,
records (raw, after context merge) and probabilities.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_STOP = object()


class RequestLogger:
    """Background JSON-lines writer; ``log`` never blocks on disk, ``close`` drains the queue."""

    def __init__(self, path: str | Path, max_queue: int = 10_000) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_queue)
        self.dropped = 0
        self._thread = threading.Thread(target=self._loop, name="dlf-request-log", daemon=True)
        self._thread.start()

    def log(self, entry: dict[str, Any]) -> None:
        try:
            self._queue.put_nowait(entry)
        except queue.Full:  # never slow down serving for the log
            self.dropped += 1

    def _loop(self) -> None:
        with self.path.open("a", encoding="utf-8") as fh:
            while True:
                entry = self._queue.get()
                if entry is _STOP:
                    break
                try:
                    fh.write(json.dumps(entry, default=str) + "\n")
                except (TypeError, ValueError) as exc:
                    log.warning("request log entry not written: %s", exc)
                if self._queue.empty():
                    fh.flush()

    def close(self, timeout: float = 5.0) -> None:
        self._queue.put(_STOP)
        self._thread.join(timeout)
