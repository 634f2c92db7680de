"""A TCP proxy a test controls, between a service and a real server (RabbitMQ, Redis, SMTP).

It runs its own event loop in a thread, so sync and async tests use it alike::

    with TcpProxy(5672) as proxy:       # listens on 127.0.0.1:proxy.port, forwards to 127.0.0.1:5672
        proxy.cut()                      # drop every connection, refuse new ones
        proxy.restore()                  # accept and forward again
        proxy.delay(0.5)                 # hold every chunk 0.5 s in each direction
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from typing import Any

from tests.support.infra import free_port


class TcpProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1", port: int | None = None,
                 host: str = "127.0.0.1"):
        self.target = (target_host, target_port)
        self.host = host
        self.port = port or free_port(host)
        self.latency = 0.0
        self.accepted = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"tcpproxy-{self.port}", daemon=True)
        self._server: asyncio.Server | None = None
        self._transports: set[asyncio.BaseTransport] = set()
        self._generation = 0

    # --- control (from any thread) ---------------------------------------------------------------

    def start(self) -> TcpProxy:
        self._thread.start()
        self._call(self._listen())
        return self

    def cut(self) -> None:
        """Drop every connection and refuse new ones (the port stops listening)."""
        self._call(self._cut())

    def restore(self) -> None:
        """Listen and forward again, without delay."""
        self.latency = 0.0
        self._call(self._listen())

    def delay(self, seconds: float) -> None:
        """Hold each chunk of data ``seconds`` before forwarding it (both directions)."""
        self.latency = max(0.0, seconds)

    set_delay = delay

    @property
    def connections(self) -> int:
        """Open proxied connections (client side)."""
        return len(self._transports) // 2

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        with contextlib.suppress(Exception):
            self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self._loop.close()

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- the loop's side ---------------------------------------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=15)

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._client, self.host, self.port, reuse_address=True)

    async def _cut(self) -> None:
        self._generation += 1
        if self._server is not None:
            self._server.close()
            self._server = None
        for transport in list(self._transports):
            transport.abort()
        self._transports.clear()

    async def _shutdown(self) -> None:
        await self._cut()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        generation = self._generation
        self.accepted += 1
        try:
            up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(*self.target), 10)
        except (OSError, TimeoutError):
            writer.transport.abort()
            return
        if generation != self._generation:  # cut while connecting
            writer.transport.abort()
            up_writer.transport.abort()
            return
        pair = (writer.transport, up_writer.transport)
        self._transports.update(pair)
        try:
            await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))
        finally:
            self._transports.difference_update(pair)

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                if self.latency:
                    await asyncio.sleep(self.latency)
                dst.write(data)
                await dst.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            with contextlib.suppress(Exception):
                dst.close()
