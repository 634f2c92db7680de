"""The development mailbox files each message, byte-exact, into every recipient's Maildir."""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme

from mailmoat_devmailbox.maildir import delivery_headers
from mailmoat_devmailbox.service import MailboxConfig, serve, tls_context
from tests.support.infra import free_port

MESSAGE = (
    b"From: s@example.org\r\nTo: alice@example.com\r\nSubject: hello\r\nX-Bytes: \xc3\xbc\xff\r\n\r\n"
    b"line one\r\n.leading dot\r\n..two dots\r\n.\r\n \r\nlast line\r\n"
)


@pytest.fixture
async def mailbox(tmp_path: Path) -> AsyncIterator[tuple[int, Path]]:
    port = free_port()
    server = await serve("127.0.0.1", port, tmp_path / "maildir")
    yield port, tmp_path / "maildir"
    server.close()
    await server.wait_closed()


def messages(root: Path, recipient: str) -> list[bytes]:
    box = root / recipient / "new"
    return [p.read_bytes() for p in sorted(box.iterdir())] if box.exists() else []


async def test_each_recipient_gets_the_exact_bytes(mailbox: tuple[int, Path]) -> None:
    port, root = mailbox

    def send() -> dict:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            return client.sendmail("s@example.org", ["Alice@example.com", "bob@example.com"], MESSAGE)

    assert await asyncio.to_thread(send) == {}
    for folder, rcpt in (("alice@example.com", "Alice@example.com"), ("bob@example.com", "bob@example.com")):
        # smtplib dot-stuffs on the wire; the mailbox holds the original bytes after the delivery headers
        assert messages(root, folder) == [delivery_headers(rcpt, "s@example.org") + MESSAGE]
        assert list((root / folder / "tmp").iterdir()) == []


async def test_null_sender_and_a_second_message_are_separate_files(mailbox: tuple[int, Path]) -> None:
    port, root = mailbox

    def send() -> None:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.sendmail("<>", ["carol@example.net"], b"Subject: bounce\r\n\r\nreport\r\n")
            client.sendmail("s@example.org", ["carol@example.net"], b"Subject: two\r\n\r\nsecond\r\n")

    await asyncio.to_thread(send)
    got = messages(root, "carol@example.net")
    assert len(got) == 2
    assert {m.split(b"\r\n", 1)[0] for m in got} == {b"Return-Path: <>", b"Return-Path: <s@example.org>"}


async def test_large_message_is_accepted(mailbox: tuple[int, Path]) -> None:
    port, root = mailbox
    data = b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * 40_000  # 40 MB, more than the policy default

    def send() -> None:
        with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
            client.sendmail("s@example.org", ["big@example.com"], data)

    await asyncio.to_thread(send)
    assert messages(root, "big@example.com")[0].endswith(data)


async def test_unwritable_maildir_answers_451(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    port = free_port()
    server = await serve("127.0.0.1", port, blocker)

    def send() -> None:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.sendmail("s@example.org", ["a@example.com"], b"Subject: x\r\n\r\ny\r\n")

    try:
        with pytest.raises(smtplib.SMTPDataError) as failure:
            await asyncio.to_thread(send)
        assert failure.value.smtp_code == 451
        assert failure.value.smtp_error.startswith(b"4.3.0")
    finally:
        server.close()
        await server.wait_closed()


async def test_starttls_is_offered_with_a_certificate(tmp_path: Path) -> None:
    ca = trustme.CA()
    leaf = ca.issue_cert("localhost", "127.0.0.1")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    assert tls_context(None, None) is None
    port = free_port()
    server = await serve("127.0.0.1", port, tmp_path / "maildir", tls_context(str(cert), str(key)))
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)

    def send() -> str:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.ehlo("client.test")
            assert client.has_extn("starttls")
            client.starttls(context=client_context)
            client.sendmail("s@example.org", ["tls@example.com"], MESSAGE)
            return client.sock.version()

    try:
        assert (await asyncio.to_thread(send)).startswith("TLSv1.")
        assert messages(tmp_path / "maildir", "tls@example.com")[0].endswith(MESSAGE)
    finally:
        server.close()
        await server.wait_closed()


def test_config_from_environment() -> None:
    config = MailboxConfig.from_env({"MAILMOAT_DEVMAILBOX_PORT": "3000", "MAILMOAT_DEVMAILBOX_DIR": "/tmp/x"})
    assert (config.host, config.port, config.root) == ("127.0.0.1", 3000, Path("/tmp/x"))
    default = MailboxConfig.from_env({})
    assert default.port == 2526 and default.root.parts[-2:] == ("var", "maildir")


@pytest.mark.parametrize(("line", "accepted"), [
    (b"x" * 998, True),
    (b"." + b"x" * 997, True),  # 999 octets on the wire: the doubled dot does not count (RFC 5321 4.5.3.1.6)
    (b"x" * 999, False),  # what aiosmtpd's reader alone would let through
    (b"." + b"x" * 998, False),
    (b"x" * 5000, False),
])
async def test_lines_over_998_octets_are_refused(mailbox: tuple[int, Path], line: bytes, accepted: bool) -> None:
    """The mailbox holds lines to RFC 5322 2.1.1 as many servers do, so the gateway's own limit is tested
    against a next hop that means it."""
    port, root = mailbox
    data = b"Subject: long\r\n\r\nbefore\r\n" + line + b"\r\nafter\r\n"

    def send() -> None:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.sendmail("s@example.org", ["long@example.com"], data)

    if accepted:
        await asyncio.to_thread(send)
        assert messages(root, "long@example.com")[0].endswith(data)
    else:
        with pytest.raises(smtplib.SMTPDataError) as failure:
            await asyncio.to_thread(send)
        assert failure.value.smtp_code == 500
        assert messages(root, "long@example.com") == []
