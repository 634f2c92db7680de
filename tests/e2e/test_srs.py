"""SRS end to end: an outside sender's mail that a mail-flow rule copies to an outside address leaves
with an SRS0 envelope sender at our domain; a bounce to that address is accepted at RCPT, reversed and
delivered to the original sender; the DSN egress makes when the outside recipient refuses reaches the
original sender too; forged and expired SRS addresses are refused at RCPT with 550 5.1.1.
"""

from __future__ import annotations

import smtplib
import time
from pathlib import Path

import pytest

from mailmoat_mail.srs import forward, reverse
from tests.e2e.test_mail_flow import send
from tests.support.sink import SmtpSink

pytestmark = pytest.mark.e2e

SECRET = b"s3cret-for-srs-tests"

FORWARDING = """
organization:
  hostname: gw.mailmoat.test
  internal_networks: [127.0.0.10/32]
accepted_domains:
  - domain: example.com
    route: onprem
routes:
  onprem:
    hosts: ["127.0.0.1:{sink_port}"]
    tls: none
delivery:
  retry_delays: [1]
  expire_after: 600
connectors:
  outbound:
    - {{name: internet, recipient_domains: [partner.example, sender.test], smart_hosts: ["127.0.0.1:{sink_port}"],
       tls: none}}
srs:
  domain: example.com
  secret_file: {secret_file}
rules:
  - name: forward-alice
    conditions:
      recipient_address: [alice@example.com]
    actions:
      add_recipients: [alice.home@partner.example]
"""


def message(subject: str) -> bytes:
    return (f"From: Ann <ann@sender.test>\r\nTo: alice@example.com\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject}@sender.test>\r\n\r\nHello Alice.\r\n").encode("ascii")


def bounce_for(address: str) -> bytes:
    return (f"From: MAILER-DAEMON@mx.partner.example\r\nTo: {address}\r\nSubject: Undelivered Mail\r\n"
            "Message-ID: <bounce1@mx.partner.example>\r\n\r\nThe mailbox is full.\r\n").encode("ascii")


def rcpt(port: int, address: str, sender: str = "") -> tuple[int, str]:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("mx.partner.example")
        client.mail(sender)
        code, reply = client.rcpt(address)
        return code, reply.decode()


def test_srs_round_trip_with_the_bounce(gateway_factory, sink: SmtpSink, tmp_path: Path) -> None:
    secret_file = tmp_path / "srs.secret"
    secret_file.write_bytes(SECRET + b"\n")
    gateway = gateway_factory(FORWARDING, secret_file=secret_file)
    code, reply = send(gateway.smtp_port, "ann@sender.test", ["alice@example.com"], message("forwarded"))
    assert code == 250, reply
    copies = {m.rcpt_tos[0]: m for m in sink.wait_for(2, timeout=30)}
    assert copies["alice@example.com"].mail_from == "ann@sender.test"  # our own server: unchanged
    srs_sender = copies["alice.home@partner.example"].mail_from
    assert srs_sender.startswith("SRS0=") and srs_sender.endswith("=sender.test=ann@example.com")
    assert reverse(srs_sender, "example.com", [SECRET], 21).address == "ann@sender.test"

    # the next hop bounces it: the null-sender bounce to the SRS address reaches Ann
    code, reply = send(gateway.smtp_port, "", [srs_sender], bounce_for(srs_sender))
    assert code == 250, reply
    (bounced,) = sink.wait_for(3, timeout=30)[2:]
    assert bounced.rcpt_tos == ["ann@sender.test"] and bounced.mail_from == ""
    assert b"The mailbox is full." in bounced.data

    # the outside recipient refuses at RCPT: egress's DSN goes to the SRS sender, and back to Ann
    sink.reply_to("alice.home@partner.example", "550 5.1.1 <alice.home@partner.example>: no such user")
    code, reply = send(gateway.smtp_port, "ann@sender.test", ["alice@example.com"], message("refused"))
    assert code == 250, reply
    got = sink.wait_for(5, timeout=30)[3:]
    (dsn,) = [m for m in got if m.mail_from == ""]
    assert dsn.rcpt_tos == ["ann@sender.test"] and b"5.1.1" in dsn.data


def test_forged_and_expired_srs_addresses_are_refused_at_rcpt(gateway_factory, tmp_path: Path) -> None:
    secret_file = tmp_path / "srs.secret"
    secret_file.write_bytes(b"newer-secret\n" + SECRET + b"\n")  # rotation: the old one still verifies
    gateway = gateway_factory(FORWARDING, secret_file=secret_file)
    good = forward("ann@sender.test", "example.com", SECRET, time.time())
    assert rcpt(gateway.smtp_port, good)[0] == 250
    forged = good.replace("=ann@", "=mallory@")
    code, reply = rcpt(gateway.smtp_port, forged)
    assert (code, reply[:5]) == (550, "5.1.1"), reply
    other = forward("ann@sender.test", "example.com", b"not our secret", time.time())
    assert rcpt(gateway.smtp_port, other)[0] == 550
    expired = forward("ann@sender.test", "example.com", SECRET, time.time() - 30 * 86400)
    code, reply = rcpt(gateway.smtp_port, expired)
    assert (code, reply[:5]) == (550, "5.1.1"), reply
    # not an SRS address: the usual checks (example.com is ours, no directory: accepted)
    assert rcpt(gateway.smtp_port, "bob@example.com")[0] == 250
