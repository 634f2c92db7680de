"""One SMTP transaction with PIPELINING (RFC 2920) on an open aiosmtplib session.

MAIL, every RCPT and DATA go out in one write and their replies are read in order; then the
content, and its final reply. Two round trips per message instead of three plus one per recipient.

aiosmtplib reads exactly one reply per command it sends and drops replies that arrive earlier, so
for the length of the transaction the session's transport hands its bytes to a ``ReplyReader``
instead, and back to aiosmtplib afterwards (under the session's command lock, so no other command
can interleave).
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field

from aiosmtplib import SMTP, SMTPResponse
from aiosmtplib.email import quote_address
from aiosmtplib.errors import SMTPResponseException, SMTPServerDisconnected, SMTPTimeoutError

MAX_REPLY_BYTES = 64 * 1024


def positive(code: int) -> bool:
    """A 2xx reply: the command was taken (RFC 5321 4.2.1; 251 and 252 to RCPT too, as Postfix reads them)."""
    return 200 <= code < 300


class ReplyReader(asyncio.Protocol):
    """Collects whole SMTP replies from a transport, in order."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._lines: list[bytes] = []
        self._replies: deque[SMTPResponse] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._error: Exception | None = None

    def data_received(self, data: bytes) -> None:
        self._buffer.extend(data)
        while (end := self._buffer.find(b"\n")) != -1:
            line = bytes(self._buffer[: end + 1])
            del self._buffer[: end + 1]
            try:
                code = int(line[:3])
            except ValueError:
                self._fail(SMTPResponseException(-1, f"Malformed SMTP reply line: {line[:80]!r}"))
                return
            self._lines.append(line)
            if line[3:4] != b"-":
                text = b"\n".join(part[4:].strip(b" \t\r\n") for part in self._lines)
                self._lines.clear()
                self._replies.append(SMTPResponse(code, text.decode("utf-8", "surrogateescape")))
        if len(self._buffer) > MAX_REPLY_BYTES:
            self._fail(SMTPResponseException(-1, "SMTP reply too long"))
        self._wake()

    def eof_received(self) -> bool:
        self._fail(SMTPServerDisconnected("Unexpected EOF received"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        error = SMTPServerDisconnected("Connection lost")
        error.__cause__ = exc
        self._fail(error)

    def _fail(self, error: Exception) -> None:
        if self._error is None:
            self._error = error
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def reply(self, timeout: float) -> SMTPResponse:
        """The next reply, in the order the commands were sent."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self._replies:
            if self._error is not None:
                raise self._error
            self._waiter = loop.create_future()
            try:
                await asyncio.wait_for(self._waiter, max(0.0, deadline - loop.time()))
            except TimeoutError as exc:
                raise SMTPTimeoutError("Timed out waiting for server response") from exc
            finally:
                self._waiter = None
        return self._replies.popleft()


@dataclass
class Exchange:
    """The replies of one pipelined transaction."""

    mail: SMTPResponse | None = None
    rcpts: list[SMTPResponse] = field(default_factory=list)
    data: SMTPResponse | None = None
    """The reply to DATA; None when no recipient was accepted and DATA was not sent."""
    final: SMTPResponse | None = None
    """The reply after the content; None when the content was not sent."""
    content_sent: bool = False
    """The content was written (so a break from here on may have left a delivered message)."""


def can_pipeline(smtp: SMTP) -> bool:
    """The server offers PIPELINING and this aiosmtplib has the parts used here."""
    protocol = smtp.protocol
    return (
        smtp.supports_extension("pipelining")
        and protocol is not None
        and getattr(protocol, "_command_lock", None) is not None
        and protocol.transport is not None
        and hasattr(protocol.transport, "set_protocol")
    )


def envelope_commands(mail_from: str, options: list[str], recipients: list[str], encoding: str) -> list[bytes]:
    """MAIL, one RCPT per recipient and DATA, as lines (addresses checked and quoted as aiosmtplib
    does: ``ValueError`` for one that cannot go on a command line)."""
    mail = b" ".join([b"MAIL FROM:" + quote_address(mail_from).encode(encoding), *(o.encode("ascii") for o in options)])
    lines = [mail + b"\r\n"]
    lines += [b"RCPT TO:" + quote_address(r).encode(encoding) + b"\r\n" for r in recipients]
    lines.append(b"DATA\r\n")
    return lines


async def pipelined_transaction(smtp: SMTP, commands: list[bytes], payload: bytes, timeout: float,
                                exchange: Exchange) -> Exchange:
    """Send ``commands`` (MAIL, RCPTs, DATA) at once, read their replies, then send ``payload``
    (dot-stuffed content ending in CRLF.CRLF) if DATA was accepted and a recipient was.

    When every recipient was refused but the server still answers DATA with 354, the content is
    an empty message ended at once, so that the session stays usable (RFC 2920 section 3.1). The
    replies go into ``exchange`` as they come. Raises an ``SMTPException`` when the session breaks
    (``exchange`` then says how far it got); the session is closed then.
    """
    protocol = smtp.protocol
    assert protocol is not None and protocol._command_lock is not None
    async with protocol._command_lock:
        transport = protocol.transport
        if transport is None or transport.is_closing():
            raise SMTPServerDisconnected("Connection lost")
        reader = ReplyReader()
        transport.set_protocol(reader)
        try:
            transport.write(b"".join(commands))
            exchange.mail = await reader.reply(timeout)
            for _ in range(len(commands) - 2):
                exchange.rcpts.append(await reader.reply(timeout))
            exchange.data = await reader.reply(timeout)
            if exchange.data.code == 354:
                accepted = positive(exchange.mail.code) and any(positive(r.code) for r in exchange.rcpts)
                exchange.content_sent = accepted
                transport.write(payload if accepted else b".\r\n")
                final = await reader.reply(timeout)
                exchange.final = final if accepted else None
        except BaseException:  # broken, timed out or cancelled half-way: the session is unusable
            transport.set_protocol(protocol)
            smtp.close()
            raise
        transport.set_protocol(protocol)
    return exchange
