"""ARC sealing of inbound mail through the whole gateway (antispam writes Authentication-Results,
routing seals), verified with dkimpy's arc_verify at the sink against a local DNS server.

A DKIM-signed message from outside gets an inbound disclaimer from a mail-flow rule: its original
signature no longer verifies, and the ARC set the gateway added vouches for what it saw (dkim=pass,
spf=pass) with a chain that verifies. A message the gateway passes on unchanged to the organisation's
own server is not sealed.
"""

from __future__ import annotations

import re
import smtplib
import textwrap
from collections.abc import Iterator
from pathlib import Path

import dkim
import pytest

from mailmoat_mail.dkimsign import generate_key
from tests.e2e.conftest import POLICY
from tests.e2e.test_dkim_signing import dnsfunc
from tests.support.dkimkeys import make_key, txt_zone
from tests.support.dnsserver import DnsServer
from tests.support.sink import SmtpSink

pytestmark = pytest.mark.e2e

SENDER_KEY = make_key()
ARC_PEM, ARC_RECORD = generate_key("rsa")

SEALING = textwrap.dedent(POLICY) + """
dns:
  nameservers: [127.0.0.1]
  port: {dns_port}
  timeout: 1
pipeline:
  filters: [antispam]
antispam:
  actions: {{spam: deliver, hcspam: deliver, bulk: deliver, spoof: deliver}}
arc:
  domain: example.com
  selector: arc2026a
  key_file: {arc_key}
rules:
  - name: external-tag
    conditions:
      sender_location: outside
      subject_contains: [quarterly]
    actions:
      append_disclaimer:
        text: "[EXTERNAL] This message came from outside the organisation."
"""

ZONE = ('sender.test. 60 IN TXT "v=spf1 ip4:127.0.0.0/8 -all"\n'
        + txt_zone("s1._domainkey.sender.test", SENDER_KEY.record) + "\n"
        + txt_zone("arc2026a._domainkey.example.com", ARC_RECORD))


@pytest.fixture
def dns() -> Iterator[DnsServer]:
    with DnsServer(ZONE) as server:
        yield server


def signed_message(subject: str, tag: str) -> bytes:
    data = (f"From: Ann <ann@sender.test>\r\nTo: alice@example.com\r\nSubject: {subject}\r\n"
            f"Date: Mon, 2 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{tag}@sender.test>\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
            "The quarterly report is ready.\r\n").encode("ascii")
    return dkim.sign(data, b"s1", b"sender.test", SENDER_KEY.private_pem) + data


def test_a_changed_inbound_message_is_sealed_and_its_chain_verifies(
        gateway_factory, sink: SmtpSink, dns: DnsServer, tmp_path: Path) -> None:
    key = tmp_path / "arc.key"
    key.write_bytes(ARC_PEM)
    gateway = gateway_factory(SEALING, services=("ingress", "antispam", "routing", "egress"),
                              dns_port=dns.port, arc_key=key)
    with smtplib.SMTP("127.0.0.1", gateway.smtp_port, timeout=30) as client:
        client.ehlo("mx.sender.test")
        client.sendmail("ann@sender.test", ["alice@example.com"], signed_message("quarterly", "q"))
        client.sendmail("ann@sender.test", ["alice@example.com"], signed_message("lunch", "lunch"))
        client.sendmail("ann@sender.test", ["alice@example.com"], upstream_sealed())
    got = {re.search(rb"Message-ID: <(\w+)@", m.data).group(1): m.data for m in sink.wait_for(3, timeout=60)}

    tagged = got[b"q"]
    assert b"[EXTERNAL]" in tagged
    lookup = dnsfunc(dns)
    with pytest.raises(dkim.ValidationError, match="body hash mismatch"):
        dkim.DKIM(tagged).verify(dnsfunc=lookup)  # the disclaimer broke the sender's signature
    cv, results, reason = dkim.arc_verify(tagged, dnsfunc=lookup)
    assert cv == dkim.CV_Pass, (reason, results)
    assert [r["instance"] for r in results] == [1]
    aar = re.search(rb"ARC-Authentication-Results: i=1; gw\.mailmoat\.test;(.*?)\r\n(?! )", tagged, re.S)
    assert aar and b"dkim=pass" in aar.group(1) and b"spf=pass" in aar.group(1)
    assert re.search(rb"ARC-Seal: i=1; cv=none; a=rsa-sha256; d=example.com; s=arc2026a;", tagged)

    untouched = got[b"lunch"]
    assert b"ARC-Seal" not in untouched and dkim.DKIM(untouched).verify(dnsfunc=lookup)

    # sealed before us (a mailing list): our set is instance 2, cv=pass, and the whole chain verifies
    chained = got[b"listcopy"]
    cv, results, reason = dkim.arc_verify(chained, dnsfunc=lookup)
    assert cv == dkim.CV_Pass, (reason, results)
    assert sorted(r["instance"] for r in results) == [1, 2]
    assert re.search(rb"ARC-Seal: i=2; cv=pass; a=rsa-sha256; d=example.com; s=arc2026a;", chained)
    assert re.search(rb"ARC-Authentication-Results: i=2; gw\.mailmoat\.test;[^\r]*\r\n(?: [^\r]*\r\n)*", chained)


def upstream_sealed() -> bytes:
    """A message a list server (authserv-id lists.sender.test, sealing as sender.test) sealed before us."""
    data = b"Authentication-Results: lists.sender.test; dkim=pass header.d=sender.test\r\n" + signed_message(
        "quarterly digest", "listcopy")
    return b"".join(dkim.arc_sign(data, b"s1", b"sender.test", SENDER_KEY.private_pem, b"lists.sender.test")) + data


FORWARDING = SEALING.replace('''rules:
  - name: external-tag''', '''connectors:
  outbound:
    - {{name: internet, recipient_domains: [partner.example], smart_hosts: ["127.0.0.1:{sink_port}"], tls: none}}
srs:
  domain: example.com
  secret_file: {srs_file}
rules:
  - name: forward-alice
    conditions:
      recipient_address: [alice@example.com]
    actions:
      add_recipients: [alice.home@partner.example]
  - name: external-tag''')


def test_a_forwarded_copy_is_sealed_and_its_sender_rewritten(
        gateway_factory, sink: SmtpSink, dns: DnsServer, tmp_path: Path) -> None:
    """Outside mail a rule copies to an outside address, unchanged: that copy leaves with an ARC set
    whose chain verifies (and the sender's own signature intact) and an SRS0 envelope sender; the
    organisation's copy is neither sealed nor rewritten."""
    key, secret = tmp_path / "arc.key", tmp_path / "srs.secret"
    key.write_bytes(ARC_PEM)
    secret.write_bytes(b"forwarding secret\n")
    gateway = gateway_factory(FORWARDING, services=("ingress", "antispam", "routing", "egress"),
                              dns_port=dns.port, arc_key=key, srs_file=secret)
    with smtplib.SMTP("127.0.0.1", gateway.smtp_port, timeout=30) as client:
        client.ehlo("mx.sender.test")
        client.sendmail("ann@sender.test", ["alice@example.com"], signed_message("lunch", "fwd"))
    copies = {m.rcpt_tos[0]: m for m in sink.wait_for(2, timeout=60)}
    outside, inside = copies["alice.home@partner.example"], copies["alice@example.com"]
    lookup = dnsfunc(dns)
    cv, results, reason = dkim.arc_verify(outside.data, dnsfunc=lookup)
    assert cv == dkim.CV_Pass and [r["instance"] for r in results] == [1], reason
    assert dkim.DKIM(outside.data).verify(dnsfunc=lookup)
    assert outside.mail_from.startswith("SRS0=") and outside.mail_from.endswith("=sender.test=ann@example.com")
    assert b"ARC-Seal" not in inside.data and inside.mail_from == "ann@sender.test"
