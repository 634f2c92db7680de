"""The ingress SMTP session in memory: bytes in, reply lines out, no socket and no broker.

``run_session`` drives the real ``IngressSMTP`` and ``IngressHandler`` over an in-memory transport;
publish and trace are recorders that serialise what they get exactly as the bus and the trace store
do (so an envelope or trace event that could not be written fails here as it would there). Used by
the fuzz target ``smtp_session`` and by fast unit tests of what a client is answered.
"""

from __future__ import annotations

import asyncio
import re
import textwrap
from dataclasses import dataclass, field
from typing import Any

from mailmoat_ingress.smtp import IngressHandler, IngressSMTP, SessionContext
from mailmoat_platform.bus import Publish, encode
from mailmoat_platform.models import TraceEvent
from mailmoat_policy import Policy, parse_policy

POLICY = textwrap.dedent("""
    organization:
      hostname: gw.example.net
      internal_networks: [192.0.2.10/32]
    accepted_domains:
      - {domain: example.com}
      - {domain: dbeb.example.com, dbeb: true}
    directory: [known@dbeb.example.com]
    limits:
      max_message_size: 100000
      max_recipients: 20
      max_commands: 200
""")
UNTRUSTED = ("198.51.100.7", 40000)
TRUSTED = ("192.0.2.10", 40000)
REPLY = re.compile(rb"\d{3}[ -]")
ENHANCED = re.compile(r"^\d{3}[ -][245]\.\d{1,3}\.\d{1,3}( |$)")


class MemoryTransport(asyncio.Transport):
    """Collects what the server writes; ``close`` ends the session as a closed socket would."""

    def __init__(self, protocol: asyncio.Protocol, peer: tuple[str, int]):
        super().__init__({"peername": peer, "sockname": ("192.0.2.25", 25)})
        self.protocol = protocol
        self.written = bytearray()
        self.closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self.closing:  # as asyncio's socket transports, writes after close go nowhere
            self.written += bytes(data)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        if not self.closing:
            self.closing = True
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)

    def abort(self) -> None:
        self.close()

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def can_write_eof(self) -> bool:
        return False


@dataclass
class Outcome:
    """What one session did: the bytes written, the messages published, the trace events."""

    written: bytes
    published: list[Publish] = field(default_factory=list)
    traced: list[TraceEvent] = field(default_factory=list)
    failures: list[BaseException] = field(default_factory=list)
    """Exceptions of background tasks (a lost trace write, say): none is expected."""

    @property
    def lines(self) -> list[str]:
        return self.written.decode("utf-8", "surrogateescape").split("\r\n")[:-1]

    def replies(self) -> list[str]:
        """Final reply lines (continuation lines left out)."""
        return [line for line in self.lines if line[3:4] != "-"]


def policy(text: str = POLICY) -> Policy:
    return parse_policy(text)


async def run_session_async(data: bytes, *, peer: tuple[str, int] = UNTRUSTED, policy_: Policy | None = None,
                            timeout: float = 5.0) -> Outcome:
    chosen = policy_ or policy()
    published: list[Publish] = []
    traced: list[TraceEvent] = []

    async def publish(item: Publish) -> None:
        encode(item.envelope, item.data)  # as the bus does
        published.append(item)

    failures: list[BaseException] = []

    async def trace(event: TraceEvent, **index: Any) -> bool:
        try:
            event.model_dump_json()  # as the trace store does
            for value in [index.get("sender"), *index.get("recipients", ())]:
                if value is not None:
                    value.encode("utf-8")  # index keys
        except Exception as exc:  # a trace event that could not be written: lost
            failures.append(exc)
            raise
        traced.append(event)
        return True

    ctx = SessionContext(policy=lambda: chosen, publish=publish, trace=trace, timeout=timeout)
    loop = asyncio.get_running_loop()
    session = IngressSMTP(ctx, IngressHandler(ctx), loop)
    ctx.sessions.add(session)
    transport = MemoryTransport(session, peer)
    session.connection_made(transport)
    session.data_received(data)
    task = session._handler_coroutine
    reader = session._reader
    deadline = loop.time() + timeout
    # The end of input is told only once the session waits for more: aiosmtpd cancels the session
    # at EOF, as a client closing its socket would have it.
    while task is not None and not task.done() and loop.time() < deadline:
        await asyncio.sleep(0)
        if getattr(reader, "_waiter", None) is not None:  # it needs more than it has
            break
    if not transport.closing:
        session.eof_received()
    if task is not None:
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout)
        except (asyncio.CancelledError, ConnectionError):
            pass
    if ctx.background:
        await asyncio.wait(list(ctx.background), timeout=timeout)
    if task is not None and task.done() and not task.cancelled() and task.exception() is not None:
        error = task.exception()
        if not isinstance(error, ConnectionError):
            failures.append(error)  # type: ignore[arg-type]
    if not transport.closing:
        transport.close()
        await asyncio.sleep(0)
    return Outcome(bytes(transport.written), published, traced, failures)


def run_session(data: bytes, **kwargs: Any) -> Outcome:
    """``run_session_async`` on a fresh event loop."""
    return asyncio.run(run_session_async(data, **kwargs))


def exchange(steps: list[bytes], **kwargs: Any) -> list[tuple[bytes, list[str]]]:
    """Send ``steps`` (each a command line, or DATA content with its final dot, that gets one reply)
    and pair each with its reply's lines; the greeting is paired with ``b""``."""
    outcome = run_session(b"".join(steps), **kwargs)
    replies: list[list[str]] = []
    current: list[str] = []
    for line in outcome.lines:
        current.append(line)
        if line[3:4] != "-":
            replies.append(current)
            current = []
    return list(zip([b"", *steps], replies, strict=False))


def missing_enhanced_codes(pairs: list[tuple[bytes, list[str]]]) -> list[tuple[bytes, str]]:
    """Reply lines without an enhanced status code (RFC 2034), other than the greeting, the reply to
    HELO/EHLO and 3xx replies."""
    missing = []
    for step, lines in pairs[1:]:
        if step[:4].upper() in (b"HELO", b"EHLO") and lines[-1][:1] == "2":
            continue
        missing += [(step, line) for line in lines if line[:1] != "3" and not ENHANCED.match(line)]
    return missing
