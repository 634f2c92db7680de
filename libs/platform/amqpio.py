"""The broker connection's socket: AMQP frames written in one ``send`` per event-loop turn.

aiormq writes every frame (a publish, an ack, a confirm-select…) with its own ``write``, and on
loopback each ``write`` is a ``send`` system call that also wakes the broker. Under load a stage
produces many frames per turn of the event loop (several acks, several publishes); this writer
gathers what is written during one turn and sends it at the end of the turn, in order. Nothing
waits longer than that turn, ``close`` sends what is pending first, and the frames leave in
exactly the order they were written.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiormq.connection import TransportFactory
from aiormq.exceptions import AMQPConnectionError
from yarl import URL

log = logging.getLogger(__name__)

READ_LIMIT = 2**16


class CoalescingWriter(asyncio.StreamWriter):
    """A StreamWriter whose writes within one event-loop turn go out as one ``transport.write``.

    ``drain`` is StreamWriter's own: flow control only. It does not send early (aiormq drains after
    every publish, which would defeat the gathering); what is pending goes out at the end of the turn.
    """

    def __init__(self, transport: asyncio.WriteTransport, protocol: asyncio.BaseProtocol,
                 reader: asyncio.StreamReader | None, loop: asyncio.AbstractEventLoop):
        super().__init__(transport, protocol, reader, loop)
        self._pending: list[bytes] = []
        self._flush_scheduled = False
        self._turn_loop = loop

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._pending.append(bytes(data))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._turn_loop.call_soon(self.flush)

    def writelines(self, data: Any) -> None:
        for chunk in data:
            self.write(chunk)

    def flush(self) -> None:
        """Send what was written since the last flush (called at the end of the turn)."""
        self._flush_scheduled = False
        if not self._pending:
            return
        chunks, self._pending = self._pending, []
        if self.transport.is_closing():
            return  # the connection is gone: unconfirmed publishes fail with it, nothing is lost
        try:
            self.transport.write(chunks[0] if len(chunks) == 1 else b"".join(chunks))
        except Exception as exc:  # a write error here would otherwise only reach the loop's handler
            log.warning("write to the broker failed: %s: %s", type(exc).__name__, exc)
            self.transport.abort()

    def write_eof(self) -> None:
        self.flush()
        super().write_eof()

    def close(self) -> None:
        self.flush()
        super().close()


async def open_coalescing(host: str | None, port: int | None,
                          **kwargs: Any) -> tuple[asyncio.StreamReader, CoalescingWriter]:
    """Like ``asyncio.open_connection``, with a ``CoalescingWriter``."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=READ_LIMIT, loop=loop)
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    transport, _ = await loop.create_connection(lambda: protocol, host, port, **kwargs)
    return reader, CoalescingWriter(transport, protocol, reader, loop)


class CoalescingTransportFactory(TransportFactory):
    """aiormq's transport factory (plain TCP, or TLS for ``amqps://``) with the coalescing writer."""

    async def create(self, url: URL, **kwargs: Any) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        provider = kwargs.pop("ssl_context_provider", None)
        ssl = await provider.get_context() if url.scheme == "amqps" and provider is not None else None
        try:
            return await open_coalescing(url.host, url.port, ssl=ssl, **kwargs)
        except OSError as exc:
            raise AMQPConnectionError(*exc.args) from exc
