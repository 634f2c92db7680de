"""DKIM signing of outbound mail through the whole gateway, verified by dkimpy at the receiving sink.

The organisation's server (127.0.0.10) sends to a partner; the gateway signs with an RSA-2048 and an
Ed25519 key side by side, and the sink's copy verifies with both against a local DNS server that
publishes the keys `mailmoat dkim keygen` printed. A disclaimer rule changes the body before signing,
so the signature still verifies. Mail whose From is not ours, and mail that already carries our
signature, are not signed (again).
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import dkim
import dns.message
import dns.query
import dns.rdatatype
import pytest

from tests.e2e.test_mail_flow import send
from tests.support.dnsserver import DnsServer
from tests.support.sink import SmtpSink

pytestmark = pytest.mark.e2e

SIGNING = """
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
connectors:
  outbound:
    - {{name: partners, recipient_domains: [partner.example, other.example], smart_hosts: ["127.0.0.1:{sink_port}"],
       tls: none}}
dkim:
  domains:
    - domain: example.com
      keys:
        - {{selector: rsa2026a, algorithm: rsa, key_file: "{keydir}/example.com.rsa2026a.key"}}
        - {{selector: ed2026a, algorithm: ed25519, key_file: "{keydir}/example.com.ed2026a.key"}}
"""

DISCLAIMER = SIGNING + """
rules:
  - name: outbound-footer
    conditions:
      sender_location: inside
    actions:
      append_disclaimer:
        text: This message was sent by Example Corp and may be confidential.
      set_header:
        X-Footer: "yes"
"""


def keygen(keydir: Path, domain: str, selector: str, algorithm: str) -> str:
    """Run ``mailmoat dkim keygen`` as an operator would; the zone line it prints."""
    out = subprocess.run(
        [sys.executable, "-m", "mailmoat_cli.main", "dkim", "keygen", domain, selector,
         "--algorithm", algorithm, "--dir", str(keydir)],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout
    (line,) = [x for x in out.splitlines() if " IN TXT " in x]
    return line


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, DnsServer]]:
    """The keys (made once for the module by the command line) and a DNS server publishing them."""
    keydir = tmp_path_factory.mktemp("dkim")
    zone = "\n".join(keygen(keydir, "example.com", sel, alg) for sel, alg in (("rsa2026a", "rsa"),
                                                                               ("ed2026a", "ed25519")))
    with DnsServer(zone.replace("( ", "").replace(" )", "")) as server:
        yield keydir, server


def dnsfunc(server: DnsServer):  # type: ignore[no-untyped-def]
    """dkimpy's TXT look-up, asked of the local DNS server."""

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        query = dns.message.make_query(name.decode("ascii"), dns.rdatatype.TXT)
        answer = dns.query.udp(query, "127.0.0.1", port=server.port, timeout=timeout)
        for rrset in answer.answer:
            for rdata in rrset:
                return b"".join(rdata.strings)
        return None

    return lookup


def message(sender: str, subject: str, extra: str = "") -> bytes:
    return (f"From: Alice <{sender}>\r\nTo: Bob <bob@partner.example>\r\nSubject: {subject}\r\n"
            f"Date: Sat, 05 Dec 2026 12:00:00 +0000\r\nMessage-ID: <{subject.replace(' ', '.')}@example.com>\r\n"
            f"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n{extra}\r\n"
            "Hello Bob,\r\nthe figures are attached.\r\n").encode("ascii")


def signatures(data: bytes) -> list[dict[str, str]]:
    headers, _ = dkim.rfc822_parse(data)
    out = []
    for name, value in headers:
        if name.lower() == b"dkim-signature":
            text = re.sub(r"\s+", "", value.decode("ascii"))
            out.append(dict(tag.split("=", 1) for tag in text.split(";") if "=" in tag))
    return out


def verify_all(data: bytes, server: DnsServer) -> list[bool]:
    verifier = dkim.DKIM(data)
    return [verifier.verify(idx=i, dnsfunc=dnsfunc(server)) for i in range(len(signatures(data)))]


def test_outbound_mail_is_signed_with_rsa_and_ed25519_and_verifies_at_the_sink(
        gateway_factory, sink: SmtpSink, keys: tuple[Path, DnsServer]) -> None:
    keydir, server = keys
    gateway = gateway_factory(SIGNING, keydir=keydir)
    code, reply = send(gateway.smtp_port, "alice@example.com", ["bob@partner.example"],
                       message("alice@example.com", "q4 figures"), source="127.0.0.10")
    assert code == 250, reply
    (got,) = sink.wait_for(1, timeout=30)
    sigs = signatures(got.data)
    assert sorted((s["a"], s["s"], s["d"]) for s in sigs) == [
        ("ed25519-sha256", "ed2026a", "example.com"), ("rsa-sha256", "rsa2026a", "example.com")]
    h = sigs[0]["h"].split(":")
    for name in ("from", "subject", "date", "to", "cc", "message-id", "mime-version", "content-type"):
        assert name in h
    assert h.count("from") == 2 and h.count("subject") == 2 and h.count("cc") == 1  # over-signed
    assert verify_all(got.data, server) == [True, True]
    # a field added after signing (a second Subject) breaks both: over-signing works
    tampered = got.data.replace(b"Subject: q4 figures\r\n", b"Subject: q4 figures\r\nSubject: urgent\r\n", 1)
    assert verify_all(tampered, server) == [False, False]


def test_signed_after_a_disclaimer_rule(
        gateway_factory, sink: SmtpSink, keys: tuple[Path, DnsServer]) -> None:
    keydir, server = keys
    gateway = gateway_factory(DISCLAIMER, keydir=keydir)
    code, reply = send(gateway.smtp_port, "alice@example.com", ["bob@partner.example"],
                       message("alice@example.com", "with footer"), source="127.0.0.10")
    assert code == 250, reply
    (got,) = sink.wait_for(1, timeout=30)
    assert b"may be confidential" in got.data and b"X-Footer: yes" in got.data
    assert len(signatures(got.data)) == 2
    assert verify_all(got.data, server) == [True, True]


def test_not_signed_for_a_foreign_from_domain_nor_for_inbound_mail_nor_twice(
        gateway_factory, sink: SmtpSink, keys: tuple[Path, DnsServer]) -> None:
    keydir, server = keys
    gateway = gateway_factory(SIGNING, keydir=keydir)
    # the organisation's server relays mail whose author is at another domain
    code, reply = send(gateway.smtp_port, "alice@example.com", ["bob@partner.example"],
                       message("someone@elsewhere.example", "not ours"), source="127.0.0.10")
    assert code == 250, reply
    # mail from outside claiming our domain in From
    code, reply = send(gateway.smtp_port, "x@outside.example", ["alice@example.com"],
                       message("ceo@example.com", "spoofed"), source="127.0.0.1")
    assert code == 250, reply
    got = sink.wait_for(2, timeout=30)
    assert [signatures(m.data) for m in got] == [[], []]
    # A message that already carries our signatures comes back through the gateway (a second pass,
    # a loop through the organisation's server): it keeps them and gets no second pair.
    code, reply = send(gateway.smtp_port, "alice@example.com", ["bob@partner.example"],
                       message("alice@example.com", "first pass"), source="127.0.0.10")
    assert code == 250, reply
    first = sink.wait_for(3, timeout=30)[2]
    code, reply = send(gateway.smtp_port, "alice@example.com", ["carol@other.example"], first.data,
                       source="127.0.0.10")
    assert code == 250, reply
    again = sink.wait_for(4, timeout=30)[3]
    assert sorted(s["s"] for s in signatures(again.data)) == ["ed2026a", "rsa2026a"]
    assert verify_all(again.data, server) == [True, True]
