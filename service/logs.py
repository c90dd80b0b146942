"""Process-wide logging: JSON lines on stdout (python-json-logger), or plain text when asked.

One JSON object per line so log shippers (Loki, CloudWatch, ELK) index
``request_id``, ``model_version``, ``rows`` and ``latency_ms`` without parsing.
``service.access`` (see service/tracing.py) writes one line per request;
uvicorn's own plain access line stays off under ``serve`` unless ``--access-log``.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal

from pythonjsonlogger.json import JsonFormatter

LogFormat = Literal["json", "text"]
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(fmt: LogFormat = "json", level: str | int = "INFO") -> None:
    """Replace the root handlers with one stdout handler; uvicorn's loggers propagate to it."""
    handler = logging.StreamHandler(sys.stdout)
    if fmt == "json":
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
                timestamp=False,
            )
        )
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level if isinstance(level, int) else level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers.clear()
        lg.propagate = True
