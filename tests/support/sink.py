"""A recording SMTP server for tests (aiosmtpd in a thread), with programmable replies."""

from __future__ import annotations

import ssl
import threading
import time
from dataclasses import dataclass, field

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from tests.support.infra import free_port


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    at: float
    tls: bool
    mail_options: list[str] = field(default_factory=list)


class _Handler:
    def __init__(self, sink: SmtpSink):
        self.sink = sink

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        reply = self.sink.rcpt_replies.get(address.lower())
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self.sink.lock:
            if self.sink.data_replies:
                return self.sink.data_replies.pop(0)
            self.sink.messages.append(
                Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content or b"",
                         time.time(), session.ssl is not None, list(envelope.mail_options))
            )
        return "250 2.0.0 Ok: queued"


class SmtpSink:
    """Records every message; ``data_replies`` are answered (in order) before accepting again;
    ``rcpt_replies`` maps a recipient to a fixed RCPT reply (e.g. a 550)."""

    def __init__(self, port: int | None = None, tls_context: ssl.SSLContext | None = None,
                 require_starttls: bool = False, hostname: str = "sink.test"):
        self.port = port or free_port()
        self.messages: list[Received] = []
        self.data_replies: list[str] = []
        self.rcpt_replies: dict[str, str] = {}
        self.lock = threading.Lock()
        self.controller = Controller(
            _Handler(self), hostname="127.0.0.1", port=self.port, server_hostname=hostname,
            tls_context=tls_context, require_starttls=require_starttls,
            decode_data=False, enable_SMTPUTF8=True, ready_timeout=10,
        )

    def start(self) -> SmtpSink:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Received]:
        """Wait until at least ``count`` messages arrived; return them (raise on timeout)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.messages) >= count:
                    return list(self.messages)
            time.sleep(0.05)
        raise AssertionError(f"sink got {len(self.messages)} messages, expected {count}")

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
