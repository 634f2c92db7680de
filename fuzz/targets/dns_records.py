"""Records a sender or a recipient's domain publishes, on arbitrary text: an SPF record evaluated for a
client, a DMARC record, an MTA-STS policy file and its TXT record, a TLS-RPT record and a TLSA record.
Each gives a result or its own refusal (SPF: a ``permerror`` result), never another exception. The first
byte picks the record; the rest is its text, decoded as the resolver decodes TXT strings."""

from __future__ import annotations

import asyncio

from mailmoat_antispam.auth.dmarc import aligned, parse_record
from mailmoat_antispam.auth.spf import check_spf
from mailmoat_egress.dane import parse_tlsa
from mailmoat_egress.mtasts import PolicyError, mx_matches, parse_policy
from mailmoat_egress.tlsreport import RecordError
from mailmoat_egress.tlsreport import parse_record as parse_tlsrpt
from mailmoat_egress.txtrecord import fields, the_record
from tests.support.spfsuite import TableResolver

SPF_RESULTS = {"pass", "fail", "softfail", "neutral", "none", "permerror", "temperror"}
MAX_QUERIES = 1 + 10 * 11 + 1
"""The record, ten terms that query DNS with ten look-ups after each (MX, PTR: RFC 7208 4.6.4), the exp."""


def _spf(text: str) -> None:
    zone = {
        "sender.test": [("TXT", text), ("MX", (10, "mx.sender.test")), ("A", "192.0.2.1")],
        "mx.sender.test": [("A", "192.0.2.2")],
        "inc.sender.test": [("TXT", "v=spf1 ip4:192.0.2.0/24 -all")],
        "9.2.0.192.in-addr.arpa": [("PTR", "mx.sender.test")],
    }
    resolver = TableResolver(zone)
    result = asyncio.run(check_spf(resolver, "192.0.2.9", "user@sender.test", "mx.sender.test"))
    assert result.result in SPF_RESULTS, result
    assert len(resolver.queries) <= MAX_QUERIES, f"{len(resolver.queries)} DNS queries for one record"


def _dmarc(text: str) -> None:
    try:
        record = parse_record("sender.test", text)
    except ValueError:
        return
    assert record.p in ("none", "quarantine", "reject") and 0 <= record.pct <= 100
    aligned("a.sender.test", "sender.test", record.adkim)


def _sts_policy(text: str) -> None:
    try:
        policy = parse_policy(text)
    except PolicyError:
        return
    for pattern in policy.mx:
        mx_matches(pattern, "mx.sender.test")


def _sts_txt(text: str) -> None:
    records = text.split("\n")
    try:
        record = the_record(records, "STSv1", PolicyError)
        if record is not None:
            fields(record, PolicyError)
    except PolicyError:
        return


def _tlsrpt(text: str) -> None:
    try:
        parse_tlsrpt(text.split("\n"))
    except RecordError:
        return


def _tlsa(text: str) -> None:
    try:
        parse_tlsa(text)
    except ValueError:
        return


CHECKS = (_spf, _dmarc, _sts_policy, _sts_txt, _tlsrpt, _tlsa)


def test_one_input(data: bytes) -> None:
    if not data:
        return
    CHECKS[data[0] % len(CHECKS)](data[1:].decode("utf-8", "replace"))


def seeds() -> list[bytes]:
    texts = [
        (0, "v=spf1 mx a:mx.sender.test ip4:192.0.2.0/24 include:inc.sender.test ~all"),
        (0, "v=spf1 exists:%{ir}.%{l1r+-}._spf.%{d} ptr -all exp=explain.%{d}"),
        (0, "v=spf1 ip6:2001:db8::/32 a/24//64 redirect=inc.sender.test"),
        (1, "v=DMARC1; p=reject; sp=quarantine; adkim=s; aspf=r; pct=50; rua=mailto:d@sender.test"),
        (1, "v=DMARC1; p=bogus; rua=mailto:d@sender.test"),
        (2, "version: STSv1\r\nmode: enforce\r\nmx: mx.sender.test\r\nmx: *.pool.sender.test\r\nmax_age: 86400\r\n"),
        (2, "version: STSv1\nmode: none\nmax_age: 0\n"),
        (3, "v=STSv1; id=20261206T000000"),
        (4, "v=TLSRPTv1; rua=mailto:tls@sender.test,https://report.sender.test/v1"),
        (5, "3 1 1 0c72ac70b745ac19998811b131d662c9ac69dbdbe7cb23e5b514b56664c5d3d6"),
    ]
    return [bytes([index]) + text.encode() for index, text in texts]
