"""Line length, one rule end to end (docs/decisions/006-line-length.md): what ingress accepts, the next
hop takes; a longer line is refused during SMTP, so the gateway never bounces a message for it.

The next hop is the bundled development mailbox, which refuses lines over 998 octets as many servers
do. Before the rule, ingress accepted lines up to 4096 octets, egress failed them at the mailbox and
sent a DSN to the unverified sender: backscatter.
"""

from __future__ import annotations

import smtplib
import time
from pathlib import Path

import pytest

from tests.support.gateway import Gateway
from tests.support.queues import dead_letters

pytestmark = pytest.mark.e2e

SENDER = "sender@example.com"  # routed to the mailbox too: a DSN would land there


def files(root: Path, rcpt: str) -> list[Path]:
    box = root / rcpt / "new"
    return sorted(box.iterdir()) if box.exists() else []


def send(port: int, data: bytes) -> tuple[int, str]:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("client.example.org")
        client.mail(SENDER)
        client.rcpt("alice@example.com")
        code, reply = client.data(data)
        return code, reply.decode()


def message(subject: str, line: bytes) -> bytes:
    return (b"From: <" + SENDER.encode() + b">\r\nSubject: " + subject.encode() + b"\r\n"
            b"Message-ID: <" + subject.encode() + b"@example.com>\r\n\r\nbefore\r\n" + line + b"\r\nafter\r\n")


def test_an_over_long_line_is_refused_at_data_and_never_bounced(tmp_path: Path, amqp_url: str,
                                                                 redis_url: str) -> None:
    gateway = Gateway(tmp_path, amqp_url, redis_url)
    gateway.write_policy(f"""
        accepted_domains:
          - domain: example.com
            route: devmailbox
        routes:
          devmailbox:
            hosts: ["127.0.0.1:{gateway.devmailbox_port}"]
            tls: none
        delivery:
          retry_delays: [1]
    """)
    with gateway:
        gateway.start(("devmailbox", "ingress", "routing", "egress"))
        too_long = message("too-long", b"y" * 999)
        assert send(gateway.smtp_port, too_long) == (554, "5.6.0 Message line too long")

        longest = message("longest", b"x" * 998 + b"\r\n." + b"z" * 997)  # the dot is doubled on the wire
        code, reply = send(gateway.smtp_port, longest)
        assert code == 250, reply
        deadline = time.monotonic() + 30
        while not files(gateway.maildir, "alice@example.com") and time.monotonic() < deadline:
            time.sleep(0.1)
        (delivered,) = files(gateway.maildir, "alice@example.com")
        assert delivered.read_bytes().endswith(longest)  # intact: not folded, not re-encoded
        time.sleep(1.0)  # a DSN for the refused message would have followed the delivery by now
        assert files(gateway.maildir, SENDER) == []
        assert dead_letters(amqp_url) == 0
