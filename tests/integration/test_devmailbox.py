"""The development mailbox files each message, byte-exact, into the recipient's Maildir."""

from __future__ import annotations

import asyncio
import smtplib
from pathlib import Path

from mailmoat_devmailbox.service import serve
from tests.support.infra import free_port


async def test_message_lands_in_each_recipients_maildir(tmp_path: Path) -> None:
    port = free_port()
    server = await serve("127.0.0.1", port, tmp_path)
    data = b"Subject: hello\r\nX-Bytes: \xc3\xbc\r\n\r\nline one\r\n..dot line\r\n"

    def send() -> None:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.sendmail("s@example.org", ["Alice@example.com", "bob@example.com"], data)

    await asyncio.to_thread(send)
    server.close()
    await server.wait_closed()
    for box in ("alice@example.com", "bob@example.com"):
        files = list((tmp_path / box / "new").iterdir())
        assert len(files) == 1
        content = files[0].read_bytes()
        assert content.startswith(b"Return-Path: <s@example.org>\r\nDelivered-To: ")
        # smtplib dot-stuffs "..dot line" on the wire; the mailbox must hold the original bytes
        assert content.split(b"\r\n", 2)[2] == data
    assert not any((tmp_path / "alice@example.com" / "tmp").iterdir())
