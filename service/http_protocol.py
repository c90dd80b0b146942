"""uvicorn's httptools protocol with each response's head and first body chunk sent together.

uvicorn writes a response's status line and headers (``http.response.start``) and its body
(``http.response.body``) as two ``transport.write`` calls, so a small /predict answer left
in two ``send`` syscalls and two TCP segments: the two writes were ~14 % of the event loop's
samples at 1 row x 32 connections (py-spy, docs/benchmarks.md). aiohttp coalesces them the
same way (aio-libs/aiohttp#10991). The head is held until the next write (normally the body,
in the same tick) and sent with it; anything that is not followed by a write in the same tick
(a streamed response, ``100 Continue``) is flushed at the end of the tick, and before
``close``/``write_eof``. Bytes leave in the order they were written either way.
"""

from __future__ import annotations

import asyncio
from typing import Any

HEAD_START = b"HTTP/1.1 "
HEAD_END = b"\r\n\r\n"

_open_connections = 0  # of this process, counted on its event loop thread


def open_connections() -> int:
    """HTTP connections open in this process through ``http_protocol()``'s class (0 under any
    other server): the batcher waits for company only when another client could send it."""
    return _open_connections


class CoalescingTransport:
    """Wraps a transport: holds a response head until the next write, then sends both in one call."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._held is not None:
            data = self._held + bytes(data)
            self._held = None
        elif data[: len(HEAD_START)] == HEAD_START and data[-len(HEAD_END) :] == HEAD_END:
            self._held = bytes(data)
            self._loop.call_soon(self.flush)
            return
        self._transport.write(data)

    def flush(self) -> None:
        if self._held is not None:
            held, self._held = self._held, None
            if not self._transport.is_closing():
                self._transport.write(held)

    def writelines(self, chunks: Any) -> None:
        self.write(b"".join(chunks))

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:  # everything else is the real transport's
        return getattr(self._transport, name)


def http_protocol() -> type[asyncio.Protocol] | str:
    """The protocol class for ``uvicorn.Config(http=...)``: coalescing httptools, or uvicorn's
    default where httptools is missing (uvicorn then uses h11, unchanged)."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:
        return "auto"

    class CoalescingHttpToolsProtocol(HttpToolsProtocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            global _open_connections
            _open_connections += 1
            super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]

        def connection_lost(self, exc: Exception | None) -> None:
            global _open_connections
            _open_connections -= 1
            super().connection_lost(exc)

    return CoalescingHttpToolsProtocol
