"""Patterns applied to what senders and recipient domains write, on input of hostile length. Each of these
once backtracked quadratically (an SPF record's top label, a TLS-RPT ``rua`` address, the From field's
address shape, the address domains of Bayes tokens): a megabyte took the stage hours of CPU. Each now takes
one pass, answers as the pattern it replaced on ordinary input (compared on generated input), and gets a
megabyte of the worst shape here; done quadratically, that runs into the suite's per-test timeout."""

from __future__ import annotations

import asyncio
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from mailmoat_antispam import bayes, rules
from mailmoat_antispam.auth import spf
from mailmoat_antispam.auth.spf import check_spf
from mailmoat_antispam.content import parse
from mailmoat_egress.tlsreport import RecordError, parse_record
from tests.support.spfsuite import TableResolver

MEGABYTE = 1_000_000

# The patterns as they were, for the comparison on input short enough for them.
OLD_TOPLABEL = re.compile(r"^(?:[A-Za-z0-9]*[A-Za-z][A-Za-z0-9]*|[A-Za-z0-9]+-[A-Za-z0-9-]*[A-Za-z0-9])$")
OLD_RUA_ADDRESS = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")
OLD_FROM_ADDRESS = re.compile(r"<?([^<>\s@]+@[^<>\s@]+)>?")
OLD_TOKEN_DOMAINS = re.compile(r"[\w.+-]+@([\w-]+(?:\.[\w-]+)+)")

LABELS = st.text(alphabet="aZ09-.é_", max_size=12)
ADDRESSY = st.text(alphabet="ab.@<> \t+-_1é", max_size=16)


@settings(max_examples=500, deadline=None)
@given(LABELS)
def test_the_top_label_check_answers_as_the_abnf_pattern(label: str) -> None:
    assert spf._toplabel(label) == bool(OLD_TOPLABEL.match(label))


@settings(max_examples=500, deadline=None)
@given(ADDRESSY)
def test_the_rua_address_check_answers_as_the_pattern(address: str) -> None:
    try:
        parse_record([f"v=TLSRPTv1; rua=mailto:{address}"])
        accepted = True
    except RecordError:
        accepted = False
    assert accepted == bool(OLD_RUA_ADDRESS.match(address.rstrip()))  # the URI is stripped, then read


@settings(max_examples=500, deadline=None)
@given(ADDRESSY)
def test_the_from_address_shape_answers_as_the_pattern(value: str) -> None:
    assert bool(rules._ADDR.search(value)) == bool(OLD_FROM_ADDRESS.search(value))


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(["a", "b1", ".", "@", "+", "-", " ", "x.y", "@c.d", "<", "é"]), max_size=12))
def test_token_domains_are_those_the_pattern_found(parts: list[str]) -> None:
    value = "".join(parts)
    old = OLD_TOKEN_DOMAINS.findall(value)
    new = bayes._ADDRESS.findall(value)
    # The same domains, except where one address's domain runs straight into the next local part
    # ("a@b.c+d@e.f"): the old pattern took the second address's local part from after the first match only.
    assert set(old) <= set(new) and all(d in old or "@" + d in value for d in new)


def test_a_megabyte_top_label_in_an_spf_record_is_a_permerror() -> None:
    record = "v=spf1 a:mail." + "a" * MEGABYTE + "! -all"
    resolver = TableResolver({"evil.test": [("TXT", [record])]})
    result = asyncio.run(check_spf(resolver, "192.0.2.9", "a@evil.test", "h.evil.test"))
    assert result.result == "permerror" and "bad domain" in result.reason


def test_a_megabyte_rua_domain_without_a_dot_is_refused() -> None:
    for domain in ("." * MEGABYTE + "<", "a" * MEGABYTE):
        try:
            parse_record([f"v=TLSRPTv1; rua=mailto:a@{domain}"])
        except RecordError as exc:
            assert "is not a mail address" in str(exc)
        else:
            raise AssertionError("accepted")


def test_a_megabyte_from_field_without_an_address() -> None:
    content = parse(b"From: " + b"a" * MEGABYTE + b"\r\nSubject: x\r\n\r\nbody\r\n")
    assert "MALFORMED_FROM" in {hit.name for hit in rules.header_heuristics(content)}
    assert not [t for t in bayes.tokens(content) if t.startswith("from:")]
    content = parse(b"From: " + b"1" * MEGABYTE + b"@bank.test\r\n"
                    + b"Message-ID: <" + b"x" * MEGABYTE + b"@id.test>\r\n\r\n")
    tokens = bayes.tokens(content)
    assert "from:bank.test" in tokens and "message-id-domain:id.test" in tokens
