"""SMTP servers for tests to deliver into.

``SmtpSink``: aiosmtpd in a background thread on a loopback port; records every message (envelope
sender, recipients, the exact bytes, TLS facts) and answers scripted replies on demand.
``PostfixSink``: Postfix's ``smtp-sink``, the fastest server to measure a client against; counts.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from tests.support.infra import free_port


@dataclass
class Received:
    """One DATA transaction the sink saw."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    at: float
    tls: bool
    mail_options: list[str] = field(default_factory=list)
    helo: str | None = None
    peer: str | None = None
    tls_version: str | None = None
    reply: str = "250 2.0.0 Ok: queued"


class _Handler:
    def __init__(self, sink: SmtpSink):
        self.sink = sink

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope, hostname: str,
                          responses: list[str]) -> list[str]:
        session.host_name = hostname
        if self.sink.pipelining:  # aiosmtpd reads commands line by line, so pipelined ones just work
            responses = [*responses[:-1], "250-PIPELINING", responses[-1]]
        return responses

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        reply = self.sink._rcpt_reply(address)
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        ssl_object = (session.ssl or {}).get("ssl_object")
        item = Received(
            mail_from=envelope.mail_from or "",
            rcpt_tos=list(envelope.rcpt_tos),
            data=envelope.original_content or b"",
            at=time.time(),
            tls=session.ssl is not None,
            mail_options=list(envelope.mail_options),
            helo=session.host_name,
            peer=session.peer[0] if session.peer else None,
            tls_version=ssl_object.version() if ssl_object else None,
        )
        if item.mail_from == "<>":
            item.mail_from = ""
        reply = self.sink._record(item)
        if self.sink.delay:  # a slow (or stalled) next hop: it has the message, the client waits
            await asyncio.sleep(self.sink.delay)
        return reply


class SmtpSink:
    """A recording SMTP server on ``127.0.0.1:<port>``.

    Scripted replies: ``data_replies`` are answered, in order, to the next DATA transactions (then
    250 again); ``rcpt_replies`` maps a recipient (any case) to a RCPT reply — a string for every
    time, or a list answered in order before the recipient is accepted. Messages answered with a
    scripted reply are kept in ``refused``; accepted ones in ``messages``. ``pipelining`` makes it
    offer PIPELINING (RFC 2920). ``always`` (e.g. ``"451 4.3.0 busy"``) answers every DATA that has
    no scripted reply; ``delay`` holds each DATA reply that many seconds after the message was
    recorded (a slow next hop; a large one stalls).
    """

    def __init__(self, port: int | None = None, tls_context: ssl.SSLContext | None = None,
                 require_starttls: bool = False, hostname: str = "sink.test", host: str = "127.0.0.1",
                 data_size_limit: int | None = 64 * 1024 * 1024, pipelining: bool = False):
        self.host = host
        self.pipelining = pipelining
        self.port = port or free_port(host)
        self.messages: list[Received] = []
        self.refused: list[Received] = []
        self.data_replies: list[str] = []
        self.rcpt_replies: dict[str, str | list[str]] = {}
        self.always: str | None = None
        self.delay = 0.0
        self.lock = threading.Lock()
        self.controller = Controller(
            _Handler(self), hostname=host, port=self.port, server_hostname=hostname,
            tls_context=tls_context, require_starttls=require_starttls, decode_data=False,
            enable_SMTPUTF8=True, data_size_limit=data_size_limit, ready_timeout=10,
        )

    # --- scripting ---------------------------------------------------------------------------------

    def reply_next(self, reply: str, count: int = 1) -> None:
        """Answer ``reply`` (e.g. ``"451 4.3.0 Try again later"``) to the next ``count`` DATA commands."""
        with self.lock:
            self.data_replies.extend([reply] * count)

    def reply_to(self, recipient: str, reply: str, count: int | None = None) -> None:
        """Answer ``reply`` to RCPT for ``recipient``: always, or the next ``count`` times."""
        with self.lock:
            self.rcpt_replies[recipient.lower()] = reply if count is None else [reply] * count

    def _rcpt_reply(self, address: str) -> str | None:
        with self.lock:
            key = next((k for k in self.rcpt_replies if k.lower() == address.lower()), None)
            if key is None:
                return None
            reply = self.rcpt_replies[key]
            if isinstance(reply, list):
                if not reply:
                    del self.rcpt_replies[key]
                    return None
                return reply.pop(0)
            return reply

    def _record(self, item: Received) -> str:
        with self.lock:
            if self.data_replies or self.always:
                item.reply = self.data_replies.pop(0) if self.data_replies else str(self.always)
                self.refused.append(item)
            else:
                self.messages.append(item)
            return item.reply

    # --- reading -----------------------------------------------------------------------------------

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Received]:
        """Wait until at least ``count`` messages were accepted; return them (AssertionError on timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                if len(self.messages) >= count:
                    return list(self.messages)
                got = len(self.messages)
            if time.monotonic() >= deadline:
                raise AssertionError(f"sink got {got} messages in {timeout}s, expected {count}")
            time.sleep(0.05)

    def clear(self) -> None:
        with self.lock:
            self.messages.clear()
            self.refused.clear()

    # --- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> SmtpSink:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


SMTP_SINK = "/usr/sbin/smtp-sink"
_COUNTERS = re.compile(rb"sess=(\d+) quit=(\d+) mesg=(\d+)")


class PostfixSink:
    """Postfix's ``smtp-sink`` on a loopback port, counting messages (``-c``).

    With ``dump_dir`` every transaction is also written to a file there (``-d``; much slower).
    ``extra_args`` go to smtp-sink as they are (e.g. ``["-r", "RCPT"]`` for 4xx to every RCPT).
    """

    def __init__(self, port: int | None = None, dump_dir: Path | None = None, backlog: int = 1024,
                 extra_args: list[str] | None = None, binary: str = SMTP_SINK):
        self.port = port or free_port()
        self.dump_dir = dump_dir
        self.backlog = backlog
        self.extra_args = list(extra_args or [])
        self.binary = binary
        self.sessions = 0
        self.quits = 0
        self.count = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._lock = threading.Lock()

    def command(self) -> list[str]:
        args = [self.binary, "-c", "-h", "smtp-sink.test"]
        if os.geteuid() == 0:
            args += ["-u", "root"]  # smtp-sink refuses to run as root without -u
        if self.dump_dir is not None:
            self.dump_dir.mkdir(parents=True, exist_ok=True)
            args += ["-d", f"{self.dump_dir}/%Y%m%d%H%M%S."]
        return [*args, *self.extra_args, f"127.0.0.1:{self.port}", str(self.backlog)]

    def start(self, timeout: float = 10.0) -> PostfixSink:
        if not (os.path.exists(self.binary) or shutil.which(self.binary)):
            raise FileNotFoundError(f"{self.binary} is missing (apt-get install postfix)")
        self._proc = subprocess.Popen(self.command(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      stdin=subprocess.DEVNULL)
        self._reader = threading.Thread(target=self._read_counters, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                raise RuntimeError(f"smtp-sink exited {self._proc.returncode}: {err.strip()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.recv(512)  # the greeting: a session without a message, not counted as one
                return self
            except OSError:
                if time.monotonic() >= deadline:
                    self.stop()
                    raise RuntimeError(f"smtp-sink did not listen on 127.0.0.1:{self.port}") from None
                time.sleep(0.05)

    def _read_counters(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        pending = b""
        while chunk := self._proc.stdout.read1(65536):
            pending += chunk
            records = pending.split(b"\r")
            pending = records.pop()
            for record in reversed(records):
                match = _COUNTERS.search(record)
                if match:
                    with self._lock:
                        self.sessions, self.quits, self.count = (int(g) for g in match.groups())
                    break

    def _wait_counters(self, condition: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if condition():
                    return True
            time.sleep(0.02)
        return False

    def wait_for(self, count: int, timeout: float = 60.0) -> int:
        """Wait until smtp-sink received at least ``count`` messages; return the count."""
        if not self._wait_counters(lambda: self.count >= count, timeout):
            raise AssertionError(f"smtp-sink got {self.count} messages in {timeout}s, expected {count}")
        return self.count

    def dumped(self) -> list[Path]:
        """The files written with ``dump_dir`` (one per transaction)."""
        return sorted(p for p in self.dump_dir.rglob("*") if p.is_file()) if self.dump_dir else []

    def stop(self) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=5)
        if self._reader is not None:
            self._reader.join(timeout=5)
        for stream in (self._proc.stdout, self._proc.stderr):
            if stream is not None:
                stream.close()
        self._proc = None

    def __enter__(self) -> PostfixSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
