"""CoalescingTransport: a response head waits for its body and leaves with it, in order."""

from __future__ import annotations

import asyncio

from service.http_protocol import CoalescingTransport, http_protocol

HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"


class RecordingTransport:
    """Stands in for the socket transport: records each write call (what became one send)."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.eof = False

    def write(self, data: bytes) -> None:
        assert not self.closed, "write after close"
        self.writes.append(bytes(data))

    def write_eof(self) -> None:
        self.eof = True

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str) -> str:
        return f"info:{name}"


async def test_head_and_body_leave_in_one_write() -> None:
    raw = RecordingTransport()
    t = CoalescingTransport(raw, asyncio.get_running_loop())  # type: ignore[arg-type]
    t.write(HEAD)
    assert raw.writes == []  # held
    t.write(b"{}")
    assert raw.writes == [HEAD + b"{}"]
    t.write(b"more")  # not a head: straight through
    assert raw.writes[-1] == b"more"
    await asyncio.sleep(0)  # the end-of-tick flush finds nothing held
    assert len(raw.writes) == 2


async def test_a_head_alone_is_flushed_at_the_end_of_the_tick_and_before_close() -> None:
    raw = RecordingTransport()
    t = CoalescingTransport(raw, asyncio.get_running_loop())  # type: ignore[arg-type]
    t.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    await asyncio.sleep(0)
    assert raw.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]
    t.write(HEAD)
    t.close()
    assert raw.writes[-1] == HEAD and raw.closed
    t2 = CoalescingTransport(RecordingTransport(), asyncio.get_running_loop())  # type: ignore[arg-type]
    t2.write(HEAD)
    t2.write_eof()
    assert t2._transport.writes == [HEAD] and t2._transport.eof  # type: ignore[attr-defined]


async def test_everything_else_is_the_real_transports() -> None:
    raw = RecordingTransport()
    t = CoalescingTransport(raw, asyncio.get_running_loop())  # type: ignore[arg-type]
    assert t.get_extra_info("peername") == "info:peername"
    assert t.is_closing() is False


def test_the_protocol_is_uvicorns_httptools_one_with_the_wrapper() -> None:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    protocol = http_protocol()
    assert isinstance(protocol, type) and issubclass(protocol, HttpToolsProtocol)


async def test_the_protocol_counts_open_connections_for_the_batcher() -> None:
    """Real sockets: each accepted connection counts while it is open (the batcher waits for
    company only when another client could bring it)."""
    import uvicorn
    from uvicorn.server import ServerState

    from service.http_protocol import open_connections

    async def settled(expected: int) -> int:
        """The count once it reaches ``expected`` (the server sees a connect or a close a few loop
        turns after the client), or what it is after about a second."""
        for _ in range(100):
            if open_connections() == expected:
                break
            await asyncio.sleep(0.01)
        return open_connections()

    async def app(scope: dict, receive: object, send: object) -> None:  # never called: no request is sent
        raise AssertionError("no request expected")

    config = uvicorn.Config(app, http=http_protocol(), log_level="warning")
    config.load()
    state = ServerState()
    protocol = http_protocol()
    assert isinstance(protocol, type)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: protocol(config=config, server_state=state, app_state={}), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    before = open_connections()
    try:
        clients = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        assert await settled(before + 2) == before + 2
        clients[0][1].close()
        await clients[0][1].wait_closed()
        assert await settled(before + 1) == before + 1
        clients[1][1].close()
        await clients[1][1].wait_closed()
    finally:
        server.close()
        await server.wait_closed()
    assert await settled(before) == before
