"""Development mailbox: an SMTP server on 127.0.0.1:2526 that files every message into Maildir.

``make run`` starts it; the example policy routes ``example.com`` to it, so mail sent through the
gateway can be read under ``var/maildir/<recipient>/new/``. It accepts any recipient, keeps the
received bytes exactly, and offers STARTTLS when the gateway's certificate is configured. Like many
servers it refuses a line longer than RFC 5321 allows (``500 Line too long``): the next hop the
gateway must not send such lines to, which is why ingress refuses them during SMTP
(docs/decisions/006-line-length.md).

Environment: ``MAILMOAT_DEVMAILBOX_HOST`` (127.0.0.1), ``MAILMOAT_DEVMAILBOX_PORT`` (2526),
``MAILMOAT_DEVMAILBOX_DIR`` (``var/maildir`` under the repository).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from aiosmtpd.smtp import SMTP, Envelope, Session

from mailmoat_devmailbox.maildir import deliver
from mailmoat_platform.runtime import Runtime
from mailmoat_platform.settings import REPO_ROOT, Settings
from mailmoat_policy import MAX_LINE_OCTETS

SERVICE = "devmailbox"
MAX_MESSAGE_SIZE = 64 * 1024 * 1024
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MailboxConfig:
    host: str
    port: int
    root: Path

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> MailboxConfig:
        env = dict(os.environ) if env is None else env
        return cls(
            host=env.get("MAILMOAT_DEVMAILBOX_HOST", "127.0.0.1"),
            port=int(env.get("MAILMOAT_DEVMAILBOX_PORT", "2526")),
            root=Path(env.get("MAILMOAT_DEVMAILBOX_DIR") or REPO_ROOT / "var" / "maildir"),
        )


LINE_TOO_LONG = f"500 5.5.2 Line too long: over {MAX_LINE_OCTETS} octets (RFC 5321 4.5.3.1.6)"


class MailboxSMTP(SMTP):
    """aiosmtpd's server reading lines of up to 998 octets, one dot doubled for transparency and CRLF
    (RFC 5321 4.5.3.1.6); a longer line ends the DATA with ``500`` (aiosmtpd's own reply)."""

    line_length_limit = MAX_LINE_OCTETS + 3


def longest_line(data: bytes) -> int:
    """Octets of the longest line of ``data``, without its CRLF."""
    return max(map(len, data.split(b"\r\n")), default=0)


class MaildirHandler:
    """aiosmtpd handler writing each accepted message to every recipient's Maildir."""

    def __init__(self, root: Path):
        self.root = root
        self.delivered = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        data = envelope.original_content or b""
        if longest_line(data) > MAX_LINE_OCTETS:  # 999 octets pass aiosmtpd's reader when no dot was doubled
            return LINE_TOO_LONG
        sender = envelope.mail_from or ""
        if sender == "<>":
            sender = ""
        try:
            for rcpt in envelope.rcpt_tos:
                path = await asyncio.to_thread(deliver, self.root, rcpt, sender, data)
                log.info("delivered to %s: %s", rcpt, path.name)
        except OSError as exc:
            log.error("cannot write to the Maildir under %s: %s", self.root, exc)
            return "451 4.3.0 Mailbox temporarily unavailable"
        self.delivered += 1
        return "250 2.0.0 Ok: delivered to Maildir"


def tls_context(cert: str | None, key: str | None) -> ssl.SSLContext | None:
    """A server context for STARTTLS from a PEM pair, or None when no pair is configured."""
    if not cert or not key:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


async def serve(host: str, port: int, root: Path, context: ssl.SSLContext | None = None) -> asyncio.Server:
    """Listen for SMTP on ``host:port``, delivering into Maildirs under ``root``."""
    handler = MaildirHandler(root)
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        lambda: MailboxSMTP(handler, hostname="devmailbox.localdomain", ident="mailmoat devmailbox",
                     decode_data=False, enable_SMTPUTF8=True, data_size_limit=MAX_MESSAGE_SIZE,
                     tls_context=context),
        host, port,
    )


async def main(settings: Settings, worker: int = 0) -> None:
    config = MailboxConfig.from_env()
    runtime = Runtime(SERVICE, settings, worker=worker)
    await runtime.start(bus=False)
    server = await serve(config.host, config.port + worker, config.root,
                         tls_context(settings.tls_cert, settings.tls_key))
    runtime.add_ready_check(server.is_serving)
    log.info("development mailbox on %s:%d writing Maildir under %s", config.host, config.port + worker, config.root)
    try:
        await runtime.serve_forever()
    finally:
        server.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), 5)
