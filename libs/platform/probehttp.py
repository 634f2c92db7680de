"""A service's /metrics, /healthz and /readyz: a small HTTP/1.1 server on asyncio streams.

Prometheus and the orchestrator's probes send GET (or HEAD) requests without bodies and keep the
connection open between scrapes; this is all the server answers. Each path maps to a function that
returns ``(status, content type, body)``; an unknown path gets 404, another method 405. A head that does
not parse gets 400, one over ``MAX_HEAD`` bytes 431, a request body (none is expected) 413 when over
``MAX_BODY`` and is read and dropped otherwise; then the connection is closed. A connection idle for
``IDLE_TIMEOUT`` seconds, or slower than ``HEAD_TIMEOUT`` to send a head it started, is closed.

It replaces aiohttp's web server in every service process: aiohttp's client and server modules, which a
stage with no HTTP of its own only loaded for these three paths, cost each process about 11 MB.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

Answer = tuple[int, str, bytes]
"""A route's answer: status, content type, body."""
Route = Callable[[], Answer]

TEXT = "text/plain; charset=utf-8"
MAX_HEAD = 16 * 1024
MAX_BODY = 64 * 1024
IDLE_TIMEOUT = 75.0
HEAD_TIMEOUT = 10.0


class BadRequest(Exception):
    """A request head that does not parse, with the status to answer."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    keep_alive: bool
    body_length: int


# --- requests and responses (pure) ---------------------------------------------------------------

def parse_head(head: bytes) -> Request:
    """The request of a head (request line and header fields, ending with an empty line); BadRequest when
    it does not parse or has a body this server cannot read (chunked)."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[0].isalpha() or not parts[2].startswith("HTTP/1."):
        raise BadRequest(400, f"bad request line {lines[0][:80]!r}")
    method, target, version = parts
    fields: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise BadRequest(400, f"bad header field {line[:80]!r}")
        fields[name.lower()] = value.strip()
    if "chunked" in fields.get("transfer-encoding", "").lower():
        raise BadRequest(400, "a chunked request body")
    try:
        length = int(fields.get("content-length", "0"))
    except ValueError:
        raise BadRequest(400, "bad Content-Length") from None
    if length < 0:
        raise BadRequest(400, "bad Content-Length")
    tokens = {t.strip().lower() for t in fields.get("connection", "").split(",")}
    keep_alive = "keep-alive" in tokens if version == "HTTP/1.0" else "close" not in tokens
    path = urlsplit(target).path if "://" in target else target.partition("?")[0]
    return Request(method.upper(), path or "/", keep_alive, length)


def answer(request: Request, routes: Mapping[str, Route]) -> Answer:
    """What a request gets: its route's answer, 404 for an unknown path, 405 for a method other than
    GET and HEAD."""
    route = routes.get(request.path)
    if route is None:
        return 404, TEXT, b"404: Not Found"
    if request.method not in ("GET", "HEAD"):
        return 405, TEXT, b"405: Method Not Allowed"
    return route()


def response(status: int, content_type: str, body: bytes, *, head_only: bool = False, close: bool = False) -> bytes:
    """The bytes of a response (no body for HEAD, which still says the body's length)."""
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Unknown"
    lines = [f"HTTP/1.1 {status} {reason}", f"Content-Type: {content_type}", f"Content-Length: {len(body)}"]
    if status == 405:
        lines.append("Allow: GET, HEAD")
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if head_only else body)


# --- the server (wiring) -------------------------------------------------------------------------

class ProbeServer:
    """Serves ``routes`` (path -> function) on one address until ``cleanup``."""

    def __init__(self, routes: Mapping[str, Route]):
        self.routes = dict(routes)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._connection, host, port, limit=MAX_HEAD)

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return tuple(self._server.sockets) if self._server is not None else ()

    @property
    def port(self) -> int | None:
        """The port it listens on (the one the OS chose for port 0)."""
        return self.sockets[0].getsockname()[1] if self.sockets else None

    async def cleanup(self) -> None:
        """Stop listening and close the open connections."""
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while await self._one(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass  # the client went away or idled out
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Read one request and answer it; whether the connection stays open for another."""
        try:
            first = await asyncio.wait_for(reader.readexactly(1), IDLE_TIMEOUT)
            head = first + await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
        except (asyncio.LimitOverrunError, ValueError):
            writer.write(response(431, TEXT, b"431: Request Header Fields Too Large", close=True))
            await writer.drain()
            return False
        try:
            request = parse_head(head[:-4])
        except BadRequest as exc:
            writer.write(response(exc.status, TEXT, f"{exc.status}: {exc}".encode(), close=True))
            await writer.drain()
            return False
        if request.body_length > MAX_BODY:
            writer.write(response(413, TEXT, b"413: Request Entity Too Large", close=True))
            await writer.drain()
            return False
        if request.body_length:
            await asyncio.wait_for(reader.readexactly(request.body_length), HEAD_TIMEOUT)
        try:
            status, content_type, body = answer(request, self.routes)
        except Exception:  # a route's function failed: the probe sees 500, the log says why
            log.exception("answering %s %s failed", request.method, request.path)
            status, content_type, body = 500, TEXT, b"500: Internal Server Error"
        writer.write(response(status, content_type, body, head_only=request.method == "HEAD",
                              close=not request.keep_alive))
        await writer.drain()
        return request.keep_alive
