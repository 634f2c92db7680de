"""The broker socket's writer: one event-loop turn's writes leave as one send, in order."""

from __future__ import annotations

import asyncio

import pytest

from mailmoat_platform.amqpio import open_coalescing

pytestmark = pytest.mark.integration


async def _server() -> tuple[asyncio.Server, bytearray, asyncio.Event]:
    received = bytearray()
    closed = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while chunk := await reader.read(65536):
            received.extend(chunk)
        closed.set()
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0), received, closed


async def test_writes_of_one_turn_are_sent_together_in_order() -> None:
    server, received, closed = await _server()
    _, writer = await open_coalescing("127.0.0.1", server.sockets[0].getsockname()[1])
    sends: list[bytes] = []
    real_write = writer.transport.write

    def counting_write(data: bytes) -> None:
        sends.append(bytes(data))
        real_write(data)

    writer.transport.write = counting_write  # type: ignore[method-assign]
    writer.write(b"one ")
    writer.writelines([b"two ", b"three "])
    await writer.drain()  # flow control only: it does not send early
    assert sends == []
    await asyncio.sleep(0)
    assert sends == [b"one two three "]
    writer.write(b"four")
    writer.close()  # what is pending goes out before the close
    await asyncio.wait_for(closed.wait(), 5)
    assert sends == [b"one two three ", b"four"]
    assert bytes(received) == b"one two three four"
    server.close()
    await server.wait_closed()


async def test_nothing_is_written_to_a_closed_transport() -> None:
    server, received, closed = await _server()
    _, writer = await open_coalescing("127.0.0.1", server.sockets[0].getsockname()[1])
    writer.transport.abort()
    writer.write(b"late")
    await asyncio.sleep(0)  # the flush sees a closing transport and drops the bytes without raising
    await asyncio.wait_for(closed.wait(), 5)
    assert bytes(received) == b""
    server.close()
    await server.wait_closed()
