"""An asyncio client for clamd's INSTREAM protocol, over TCP or a unix socket.

A stream of one chunk (at most ``CHUNK`` bytes, most scans) goes over a clamd session
(``zIDSESSION``): connections kept open and used for one command after another, each reply prefixed
with its command's number, which is dropped. A session clamd has closed meanwhile (its
``IdleTimeout``) is noticed by the reply that does not come, and the scan is done once more on a new
connection; sessions unused for ``SESSION_IDLE`` seconds are closed here first. A reply that is not a
verdict (an ``ERROR``) ends its session. Larger streams, pings and the version open a connection of
their own (clamd serves one command per connection outside a session). A semaphore bounds the
exchanges a process has going at once. The data goes in chunks, each prefixed by its length as 4
bytes big-endian, ended by a zero length; the reply is one line, ``stream: OK``,
``stream: <signature> FOUND`` or ``<reason> ERROR``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from dataclasses import dataclass, field

CHUNK = 65_536
SESSION_IDLE = 10.0
"""Seconds a clamd session is kept unused before it is closed (clamd's own ``IdleTimeout`` is 30 by default)."""
REPLY_NUMBER = re.compile(rb"^\d+: ")


class ClamdUnavailable(Exception):
    """clamd could not be reached, or did not answer in time: retry later."""


class ClamdUnreachable(ClamdUnavailable):
    """No connection to clamd could be opened (nothing was sent)."""


@dataclass(frozen=True)
class Address:
    host: str | None = None
    port: int | None = None
    path: str | None = None

    def __str__(self) -> str:
        return f"unix:{self.path}" if self.path else f"{self.host}:{self.port}"


def parse_address(text: str) -> Address:
    """``host:port``, ``tcp://host:port``, ``[v6]:port``, ``unix:/path`` or ``/path``."""
    value = text.strip()
    if value.startswith("unix:"):
        value = value[5:].removeprefix("//")
        if not value:
            raise ValueError(f"{text!r}: no socket path")
        return Address(path=value)
    if value.startswith("/"):
        return Address(path=value)
    value = value.removeprefix("tcp://").rstrip("/")
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"{text!r} is not host:port or a unix socket path")
    number = int(port)
    if not 0 < number < 65536:
        raise ValueError(f"{text!r}: port out of range")
    return Address(host=host.strip("[]"), port=number)


@dataclass(frozen=True)
class ScanResult:
    """clamd's answer for one stream."""

    found: str | None = None
    """Signature name when something was found."""
    error: str | None = None
    """clamd's reason when it could not scan (size limit, engine error)."""

    @property
    def clean(self) -> bool:
        return self.found is None and self.error is None


def parse_reply(reply: bytes) -> ScanResult:
    """A reply line of clamd (without its terminator) as a ScanResult."""
    text = reply.rstrip(b"\0\r\n").decode("utf-8", "replace").strip()
    if text.endswith(" FOUND"):
        body = text[: -len(" FOUND")]
        _, _, name = body.rpartition(": ")
        return ScanResult(found=name.strip() or body.strip() or "unknown")
    if text.endswith(" ERROR"):
        return ScanResult(error=text[: -len(" ERROR")].strip())
    if text.endswith(": OK") or text == "OK":
        return ScanResult()
    return ScanResult(error=f"unexpected reply {text[:200]!r}")


@dataclass
class _Session:
    """An open clamd session and when it was last used."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    used: float = field(default_factory=time.monotonic)

    def usable(self, now: float) -> bool:
        return now - self.used < SESSION_IDLE and not self.writer.is_closing() and not self.reader.at_eof()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


class ClamdClient:
    """Scans byte strings with one clamd; raises ClamdUnavailable when it cannot."""

    def __init__(self, address: Address | str, *, connect_timeout: float = 5.0, scan_timeout: float = 60.0,
                 max_connections: int = 8, stream_max_length: int = 26_214_400):
        self.address = parse_address(address) if isinstance(address, str) else address
        self.connect_timeout = connect_timeout
        self.scan_timeout = scan_timeout
        self.stream_max_length = stream_max_length
        self._slots = asyncio.Semaphore(max_connections)
        self._max_sessions = max_connections
        self._sessions: list[_Session] = []
        self.available: bool | None = None
        """The outcome of the last exchange: True (answered), False (unreachable), None (not tried)."""

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        try:
            if self.address.path:
                opening = asyncio.open_unix_connection(self.address.path)
            else:
                opening = asyncio.open_connection(self.address.host, self.address.port)
            return await asyncio.wait_for(opening, self.connect_timeout)
        except (OSError, TimeoutError) as exc:
            self.available = False
            raise ClamdUnreachable(f"cannot connect to clamd at {self.address}: {exc or 'timeout'}") from exc

    async def _exchange(self, command: bytes, data: bytes | None) -> bytes:
        """One command on a connection of its own."""
        async with self._slots:
            reader, writer = await self._connect()
            try:
                reply = await self._talk(reader, writer, command, data)
            finally:
                writer.close()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(writer.wait_closed(), 1)
        self.available = True
        return reply

    async def _talk(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, command: bytes,
                    data: bytes | None) -> bytes:
        """Send one command (and its stream) and read its reply; ClamdUnavailable when that fails."""
        # The reply is awaited while sending: clamd answers a stream above its StreamMaxLength
        # and closes while the rest is still being sent, and its reply must not be lost.
        replying = asyncio.ensure_future(reader.readuntil(b"\0"))
        try:
            async with asyncio.timeout(self.scan_timeout):
                try:
                    await _send(writer, command, data, replying)
                except OSError:
                    pass
                return await replying
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            self.available = False
            reason = "timeout" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
            raise ClamdUnavailable(f"clamd at {self.address}: {reason}") from exc
        finally:
            replying.cancel()

    async def _session_exchange(self, command: bytes, data: bytes) -> bytes:
        """One command in a clamd session: an open one if there is, else a new one; a session found
        closed by clamd (no reply, the connection ended) is given up and the command sent once more on
        a new one."""
        async with self._slots:
            session = self._idle_session()
            if session is not None:
                try:
                    return self._done(session, await self._talk(session.reader, session.writer, command, data))
                except ClamdUnavailable as exc:
                    session.close()
                    if isinstance(exc.__cause__, TimeoutError):
                        raise
            reader, writer = await self._connect()
            session = _Session(reader, writer)
            try:  # the session opened and its first command in one write
                return self._done(session, await self._talk(reader, writer, b"zIDSESSION\0" + command, data))
            except BaseException:
                session.close()
                raise

    def _idle_session(self) -> _Session | None:
        now = time.monotonic()
        while self._sessions:
            session = self._sessions.pop()
            if session.usable(now):
                return session
            session.close()
        return None

    def _done(self, session: _Session, reply: bytes) -> bytes:
        """The reply without its command number; the session kept for the next command when the reply
        was a verdict (after an ERROR clamd ends the session)."""
        self.available = True
        reply = REPLY_NUMBER.sub(b"", reply, count=1)
        if reply.rstrip(b"\0").endswith((b" OK", b" FOUND")) and len(self._sessions) < self._max_sessions:
            session.used = time.monotonic()
            self._sessions.append(session)
        else:
            session.close()
        return reply

    def close(self) -> None:
        """Close the open sessions (the client is being replaced)."""
        sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()

    async def ping(self) -> bool:
        """True when clamd answers PONG (and records availability)."""
        try:
            reply = await self._exchange(b"zPING\0", None)
        except ClamdUnavailable:
            return False
        ok = reply.rstrip(b"\0") == b"PONG"
        self.available = ok
        return ok

    async def version(self) -> bytes:
        """clamd's ``VERSION`` reply (engine, database version and date); ClamdUnavailable when away."""
        return await self._exchange(b"zVERSION\0", None)

    async def scan(self, data: bytes) -> ScanResult:
        """Scan one stream. Data above ``stream_max_length`` is not sent: an error result says so."""
        if len(data) > self.stream_max_length:
            return ScanResult(error=f"{len(data)} bytes, above the stream limit of {self.stream_max_length}")
        try:
            if len(data) <= CHUNK:
                return parse_reply(await self._session_exchange(b"zINSTREAM\0", data))
            return parse_reply(await self._exchange(b"zINSTREAM\0", data))
        except ClamdUnavailable as exc:
            # The connection broke while sending. When clamd still answers, it refused this stream
            # (its StreamMaxLength, lower than ours, and the reply lost with the reset); otherwise
            # clamd went away and the caller retries later. A connection that never opened (refused)
            # says nothing about the stream, even if clamd answers again a moment later.
            if (not isinstance(exc, ClamdUnreachable) and isinstance(exc.__cause__, ConnectionError)
                    and await self.ping()):
                return ScanResult(error="connection closed by clamd while sending (INSTREAM size limit?)")
            raise


async def _send(writer: asyncio.StreamWriter, command: bytes, data: bytes | None,
                replying: asyncio.Future[bytes]) -> None:
    if data is None or len(data) <= CHUNK:
        # One chunk or none: the command, the chunk and the end in one write (one send, not four).
        if data is None:
            writer.write(command)
        else:
            chunk = len(data).to_bytes(4, "big") + data if data else b""
            writer.write(command + chunk + b"\0\0\0\0")
        await writer.drain()
        return
    writer.write(command)
    if data is not None:
        view = memoryview(data)
        for start in range(0, len(data), CHUNK):
            if replying.done():  # answered early (an error): stop sending
                return
            chunk = view[start : start + CHUNK]
            writer.write(len(chunk).to_bytes(4, "big"))
            writer.write(chunk)
            await writer.drain()
            await asyncio.sleep(0)  # let a reply be read as soon as it comes
        writer.write(b"\0\0\0\0")
    await writer.drain()
