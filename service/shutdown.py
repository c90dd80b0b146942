"""Graceful shutdown: on SIGTERM, first stop being ready, then drain, then exit.

Sequence (``DLF_SHUTDOWN_GRACE_S`` > 0, under uvicorn):

1. SIGTERM arrives: ``state.draining`` is set, ``/readyz`` answers 503, and
   every response carries ``Connection: close`` so clients stop reusing
   connections to this process. Requests are still served normally.
2. After the grace period (long enough for a load balancer's readiness probe
   to notice), uvicorn's own SIGTERM handling runs: it stops accepting
   connections, waits for the requests in flight, then runs the lifespan
   shutdown (batcher, feature store).

A second SIGTERM skips the rest of the grace period. Outside uvicorn's
main thread (tests with TestClient) nothing is installed.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)


def install_sigterm_drain(state: Any, grace_s: float) -> bool:
    """Wrap the server's SIGTERM handler with the readiness flip + grace period; True if installed."""
    if grace_s <= 0 or threading.current_thread() is not threading.main_thread():
        return False
    server_handler = signal.getsignal(signal.SIGTERM)
    if not callable(server_handler):  # no server handler to hand over to (not under uvicorn)
        return False
    loop = asyncio.get_running_loop()

    def hand_over() -> None:
        log.info("grace period over: closing the listener and draining requests in flight")
        server_handler(signal.SIGTERM, None)

    def on_sigterm(signum: int, frame: Any) -> None:
        if state.draining:
            loop.call_soon_threadsafe(hand_over)
            return
        state.draining = True
        log.info("SIGTERM: not ready any more; serving for %.1fs more, then draining", grace_s)
        loop.call_soon_threadsafe(loop.call_later, grace_s, hand_over)

    signal.signal(signal.SIGTERM, on_sigterm)
    return True


class DrainingMiddleware:
    """While draining, ask clients to close their connections (``Connection: close``)."""

    def __init__(self, app: ASGIApp, state: Any) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start" and self.state.draining:
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"connection"]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        await self.app(scope, receive, send_wrapper)
