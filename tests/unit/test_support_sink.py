"""The test SMTP servers: the recording sink keeps exact bytes and answers scripted replies;
the smtp-sink wrapper counts what Postfix's smtp-sink received."""

from __future__ import annotations

import smtplib
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from tests.support.sink import PostfixSink, SmtpSink

DATA = b"Subject: t\r\nX-8bit: \xc3\xbc\r\n\r\n.dot\r\n\r\nend\r\n"


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink() as server:
        yield server


def test_records_envelope_and_exact_bytes(sink: SmtpSink) -> None:
    with smtplib.SMTP("127.0.0.1", sink.port, timeout=10) as client:
        client.ehlo("client.test")
        client.sendmail("s@example.org", ["a@example.com", "B@example.com"], DATA, mail_options=["BODY=8BITMIME"])
        client.sendmail("<>", ["dsn@example.com"], b"Subject: dsn\r\n\r\nx\r\n")
    first, second = sink.wait_for(2)
    assert (first.mail_from, first.rcpt_tos, first.data) == ("s@example.org", ["a@example.com", "B@example.com"], DATA)
    assert first.helo == "client.test" and first.peer == "127.0.0.1"
    assert "BODY=8BITMIME" in first.mail_options
    assert first.tls is False and first.tls_version is None
    assert second.mail_from == ""


def test_next_messages_get_scripted_replies_then_250(sink: SmtpSink) -> None:
    sink.reply_next("451 4.3.0 Try again later", count=2)
    with smtplib.SMTP("127.0.0.1", sink.port, timeout=10) as client:
        for _ in range(2):
            with pytest.raises(smtplib.SMTPDataError) as refused:
                client.sendmail("s@example.org", ["a@example.com"], DATA)
            assert refused.value.smtp_code == 451
            client.rset()
        client.sendmail("s@example.org", ["a@example.com"], DATA)
    assert [m.reply[:3] for m in sink.refused] == ["451", "451"]
    assert len(sink.messages) == 1 and sink.messages[0].data == DATA


def test_recipient_replies_always_or_a_number_of_times(sink: SmtpSink) -> None:
    sink.reply_to("Gone@example.com", "550 5.1.1 User unknown")
    sink.reply_to("busy@example.com", "451 4.2.1 Mailbox busy", count=1)
    with smtplib.SMTP("127.0.0.1", sink.port, timeout=10) as client:
        refused = client.sendmail("s@example.org", ["gone@example.com", "busy@example.com", "ok@example.com"], DATA)
        assert refused == {"gone@example.com": (550, b"5.1.1 User unknown"),
                           "busy@example.com": (451, b"4.2.1 Mailbox busy")}
        refused = client.sendmail("s@example.org", ["gone@example.com", "busy@example.com"], DATA)
        assert refused == {"gone@example.com": (550, b"5.1.1 User unknown")}
    assert [m.rcpt_tos for m in sink.messages] == [["ok@example.com"], ["busy@example.com"]]


def test_wait_for_fails_when_too_few_arrive(sink: SmtpSink) -> None:
    with pytest.raises(AssertionError, match="got 0 messages"):
        sink.wait_for(1, timeout=0.3)


def test_starttls_with_a_given_context(tmp_path: Path) -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("sink.test", "127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    with SmtpSink(tls_context=server_context, require_starttls=True) as sink:
        with smtplib.SMTP("127.0.0.1", sink.port, timeout=10) as client:
            client.ehlo("client.test")
            assert client.has_extn("starttls")
            assert client.mail("s@example.org")[0] == 530  # plain text refused: STARTTLS first
            client.starttls(context=client_context)
            client.sendmail("s@example.org", ["a@example.com"], DATA)
        (got,) = sink.wait_for(1)
    assert got.tls and got.tls_version in ("TLSv1.2", "TLSv1.3") and got.data == DATA


def test_postfix_smtp_sink_counts_messages() -> None:
    with PostfixSink() as sink:
        with smtplib.SMTP("127.0.0.1", sink.port, timeout=10) as client:
            for _ in range(3):
                client.sendmail("s@example.org", ["a@example.com"], DATA)
        source = subprocess.run(
            ["/usr/sbin/smtp-source", "-s", "4", "-m", "20", "-f", "s@example.org", "-t", "b@example.com",
             f"127.0.0.1:{sink.port}"],
            capture_output=True, timeout=60,
        )
        assert source.returncode == 0, source.stderr
        assert sink.wait_for(23, timeout=20) == 23
        with pytest.raises(AssertionError):
            sink.wait_for(24, timeout=0.5)


def test_postfix_smtp_sink_dumps_and_scripted_refusals(tmp_path: Path) -> None:
    with PostfixSink(dump_dir=tmp_path / "dump") as sink:
        with smtplib.SMTP("127.0.0.1", sink.port, timeout=10) as client:
            client.sendmail("s@example.org", ["a@example.com"], DATA)
            client.sendmail("s@example.org", ["a@example.com"], DATA)
        sink.wait_for(2)
    files = sink.dumped()
    assert len(files) == 2 and all(b"X-Rcpt-Args: <a@example.com>" in f.read_bytes() for f in files)
    with PostfixSink(extra_args=["-r", "RCPT"]) as sink:
        with smtplib.SMTP("127.0.0.1", sink.port, timeout=10) as client:
            with pytest.raises(smtplib.SMTPRecipientsRefused):
                client.sendmail("s@example.org", ["a@example.com"], DATA)
