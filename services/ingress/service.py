"""Ingress service wiring: the SMTP listener on the runtime every service shares (its serve loop, its
background tasks: the bus connection, the rate limiter's refresh), publish with confirms, trace."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl
import time

from mailmoat_ingress.certfiles import CertificateFiles
from mailmoat_ingress.connectors import client_ca_file, server_context
from mailmoat_ingress.direct import routes_at_ingress
from mailmoat_ingress.greylist import Greylist
from mailmoat_ingress.proxy import deployment_trusted
from mailmoat_ingress.ratelimit import RateLimiter
from mailmoat_ingress.screen import ConnectionScreen
from mailmoat_ingress.smtp import SERVICE, SessionContext, protocol_factory
from mailmoat_platform.bus import Publish, stage_queue
from mailmoat_platform.runtime import Handler, Runtime, count_verdict
from mailmoat_platform.settings import Settings
from mailmoat_platform.telemetry import trace_context

log = logging.getLogger(__name__)

ROUTING_QUEUE = stage_queue("routing")
ROUTE_STEP_TIMEOUT = 1.0
"""Longest wait for the routing step at ingress before the message goes to the routing stage."""
ROUTE_STEP_PAUSE = 10.0
"""After a failed routing step at ingress, how long messages go straight to the routing stage."""


def listen_socket(host: str, port: int, backlog: int = 512) -> socket.socket:
    """A listening socket several ingress processes can share (SO_REUSEADDR + SO_REUSEPORT)."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """The STARTTLS server context when a certificate and key are configured."""
    if not (settings.tls_cert and settings.tls_key):
        return None
    return server_context(settings.tls_cert, settings.tls_key, client_ca_file())


def tls_files(settings: Settings) -> CertificateFiles | None:
    """The STARTTLS certificate files when configured, reloaded when they change (no restart)."""
    if not (settings.tls_cert and settings.tls_key):
        return None
    return CertificateFiles(settings.tls_cert, settings.tls_key, client_ca_file(), server_context)


class IngressServer:
    """One ingress process: Runtime (bus, trace, policy, HTTP) plus the SMTP listener."""

    def __init__(self, settings: Settings, worker: int = 0, *, grace: float = 30.0):
        self.settings = settings
        self.worker = worker
        self.grace = grace
        self.runtime = Runtime(SERVICE, settings, worker=worker)
        self.ctx = SessionContext(
            policy=lambda: self.runtime.policy.current,
            publish=self._publish,
            trace=self.runtime.trace.record,
            tls_files=tls_files(settings),
            tracer=self.runtime.tracer,
            limiter=RateLimiter(self.runtime.redis),
            greylist=Greylist(self.runtime.redis),
            proxy_trusted=deployment_trusted(os.environ),
            screen=ConnectionScreen(),
        )
        self.server: asyncio.AbstractServer | None = None
        self.port: int | None = None
        self._route: Handler | None = None
        self._route_paused_until = 0.0

    @property
    def listening(self) -> bool:
        return self.server is not None and self.server.is_serving()

    async def start(self) -> IngressServer:
        """Start HTTP and the policy watch, connect the bus in the background, then listen.

        SMTP is served before the broker answers: messages then get ``451 4.3.0`` until it does.
        """
        assert self.ctx.limiter is not None
        self.runtime.add_background(self.runtime.connect_bus)
        self.runtime.add_background(self.ctx.limiter.refresh_forever)
        self.runtime.on_stop(self._drain)
        await self.runtime.start(bus=False)
        loop = asyncio.get_running_loop()
        sock = listen_socket(self.settings.smtp_host, self.settings.smtp_port)
        self.server = await loop.create_server(protocol_factory(self.ctx, loop), sock=sock)
        self.port = sock.getsockname()[1]
        self.runtime.add_ready_check(lambda: self.runtime.bus.connected and self.listening)
        log.info("SMTP listening on %s:%s (worker %d)", self.settings.smtp_host, self.port, self.worker)
        return self

    async def _publish(self, item: Publish) -> None:
        timeout = self.settings.publish_timeout
        routed = await self._routed_here(item)
        await asyncio.wait_for(self.runtime.bus.publish_many(routed or [item], timeout=timeout), timeout)
        if routed:
            count_verdict("routing", item.envelope, routed)  # as the routing stage counts it

    async def _routed_here(self, item: Publish) -> list[Publish] | None:
        """The routing step's outputs for a message bound for routing, when ingress routes it itself
        (``direct.routes_at_ingress``); None to publish the message to routing as usual.

        The step takes tens of microseconds and one trace write; a client never waits more than
        ``ROUTE_STEP_TIMEOUT`` for it. After a failure (a store that is down or hangs), messages go
        to the routing stage without trying for ``ROUTE_STEP_PAUSE`` seconds.
        """
        if item.queue != ROUTING_QUEUE or not routes_at_ingress(self.runtime.policy.current):
            return None
        if time.monotonic() < self._route_paused_until:
            return None
        if self._route is None:
            from mailmoat_routing.service import make_handler as routing_handler  # only where ingress routes

            self._route = routing_handler(self.runtime)
        try:
            outputs = await asyncio.wait_for(self._route(item.envelope, item.message), ROUTE_STEP_TIMEOUT)
        except Exception as exc:  # a store routing needs is down, say: let the routing stage handle it
            self._route_paused_until = time.monotonic() + ROUTE_STEP_PAUSE
            log.warning("routing %s at ingress failed (%s: %s); handing messages to the routing stage "
                        "for %.0f s", item.envelope.id, type(exc).__name__, exc, ROUTE_STEP_PAUSE,
                        extra={"message_id": item.envelope.id})
            return None
        context = trace_context(item.headers)
        for output in outputs:
            output.headers = {**context, **output.headers}
        return outputs

    def request_stop(self) -> None:
        self.runtime.request_stop()

    async def serve_forever(self) -> None:
        """Serve until SIGTERM/SIGINT, then stop gracefully (the runtime's serve loop; its shutdown
        drains the SMTP sessions first)."""
        await self.runtime.serve_forever()

    async def stop(self, grace: float | None = None) -> None:
        """Stop accepting, let sessions finish their transaction (bounded), then shut the runtime down."""
        if grace is not None:
            self.grace = grace
        await self.runtime.shutdown(grace=0)

    async def _drain(self) -> None:
        """Stop accepting and let sessions finish their transaction (within ``grace`` seconds)."""
        self.ctx.stopping = True
        if self.server is not None:
            self.server.close()
        for session in list(self.ctx.sessions):
            with contextlib.suppress(Exception):
                session.stop_if_idle()
        deadline = time.monotonic() + self.grace
        while self.ctx.sessions and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for session in list(self.ctx.sessions):
            with contextlib.suppress(Exception):
                session.close()
        if self.ctx.background:
            await asyncio.wait(list(self.ctx.background), timeout=5)
        if self.ctx.screen is not None:
            await self.ctx.screen.close()


async def main(settings: Settings, worker: int = 0) -> None:
    server = IngressServer(settings, worker)
    await server.start()
    await server.serve_forever()
