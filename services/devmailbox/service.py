"""Development mailbox: an SMTP server on 127.0.0.1:2526 that files every message into Maildir.

``make run`` starts it so that mail sent through the gateway can be read under ``var/maildir/``.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from aiosmtpd.smtp import SMTP, Envelope, Session

from mailmoat_common.runtime import Runtime
from mailmoat_common.settings import REPO_ROOT, Settings
from mailmoat_devmailbox.maildir import deliver

SERVICE = "devmailbox"
log = logging.getLogger(__name__)


class MaildirHandler:
    """aiosmtpd handler writing each accepted message to every recipient's Maildir."""

    def __init__(self, root: Path):
        self.root = root

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        data = envelope.original_content or b""
        sender = envelope.mail_from or ""
        for rcpt in envelope.rcpt_tos:
            path = await asyncio.to_thread(deliver, self.root, rcpt, sender, data)
            log.info("delivered to %s: %s", rcpt, path)
        return "250 2.0.0 Ok: delivered to Maildir"


async def serve(host: str, port: int, root: Path) -> asyncio.Server:
    handler = MaildirHandler(root)
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        lambda: SMTP(handler, hostname="devmailbox.localdomain", ident="mailmoat devmailbox",
                     decode_data=False, enable_SMTPUTF8=True),
        host, port,
    )


async def main(settings: Settings, worker: int = 0) -> None:
    host = os.environ.get("MAILMOAT_DEVMAILBOX_HOST", "127.0.0.1")
    port = int(os.environ.get("MAILMOAT_DEVMAILBOX_PORT", "2526"))
    root = Path(os.environ.get("MAILMOAT_DEVMAILBOX_DIR", str(REPO_ROOT / "var" / "maildir")))
    runtime = Runtime(SERVICE, settings, worker=worker)
    await runtime.start(bus=False)
    server = await serve(host, port, root)
    log.info("development mailbox on %s:%d writing Maildir under %s", host, port, root)
    try:
        await runtime.serve_forever()
    finally:
        server.close()
        await server.wait_closed()
