"""Patterns applied to what senders and recipient domains write, on input of hostile length. Each of these
once backtracked quadratically (SPF records, a TLS-RPT ``rua`` address, the From field, Bayes tokens, HTML
tag and script stripping, the remote-image checks, DKIM's relaxed body, the bulk level's sender): a megabyte
took a stage hours of CPU. Each now takes one pass, answers as the pattern it replaced on ordinary input
(compared on generated input), and gets a megabyte of the worst shape here; done quadratically, that runs
into the suite's per-test timeout."""

from __future__ import annotations

import asyncio
import base64
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from mailmoat_antispam import asf, bayes, bulk, rules
from mailmoat_antispam.auth import spf
from mailmoat_antispam.auth.spf import check_spf
from mailmoat_antispam.content import Content, parse
from mailmoat_egress.tlsreport import RecordError, parse_record
from mailmoat_mail import dkimsign
from mailmoat_platform.models import Envelope
from mailmoat_policy import parse_policy
from mailmoat_routing.rules import message as routing_message
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


# Patterns on decoded HTML parts (antispam's advanced checks), searched from
# every place a match may start: each search read from each start in a long run to the run's end (quadratic,
# hours for a megabyte). Each is now tried once per run (per tag, per element name) only.
# And the same on a body DKIM signs, a From field (or MAIL FROM) and an SPF term.
OLD_TRAILING_WSP = re.compile(rb"[\t ]+\r\n")
OLD_SENDER_DOMAIN = re.compile(r"[^<>\s@\"]+@([^<>\s@\"]+)")
OLD_ENDS_IN_MACRO = re.compile(r"%\{[^}]*\}\.?$")

SPECS = st.lists(st.sampled_from(["%{", "%%{", "}", "%{d}", ".", "a"]), max_size=8)


def _html_message(markup: bytes) -> bytes:
    body = base64.encodebytes(markup).replace(b"\n", b"\r\n")
    return (b"From: a@sender.test\r\nTo: b@rcpt.test\r\nSubject: x\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: text/html; charset=us-ascii\r\nContent-Transfer-Encoding: base64\r\n\r\n" + body)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from([b" ", b"\t", b"\r\n", b"\r", b"\n", b"a"]), max_size=14))
def test_trailing_white_space_goes_as_the_pattern_took_it(parts: list[bytes]) -> None:
    body = b"".join(parts)
    assert dkimsign._TRAILING_WSP.sub(b"\r\n", body) == OLD_TRAILING_WSP.sub(b"\r\n", body)


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet='ab.@<>" \t1é', max_size=16))
def test_sender_domains_are_those_the_pattern_found(value: str) -> None:
    old = OLD_SENDER_DOMAIN.search(value)
    assert bulk.sender_domains(Content(headers=[]), value) == ([old.group(1).lower().rstrip(".>")] if old else [])


@settings(max_examples=1000, deadline=None)
@given(SPECS)
def test_a_spec_ends_in_a_macro_as_the_pattern_says(parts: list[str]) -> None:
    spec = "".join(parts)
    # _check_macro_string lets no line break through, so "$" (which also matches before a final "\n") is the end.
    assert spf._ends_in_macro(spec) == bool(OLD_ENDS_IN_MACRO.search(spec))


def test_a_megabyte_html_part_of_unclosed_tags() -> None:
    settings_ = parse_policy("antispam: {advanced: {web_bugs: on, image_links_remote: on, javascript: on}}")
    for markup in (b"<" * MEGABYTE, b"<script " * (MEGABYTE // 8), b"<style>" * (MEGABYTE // 7),
                   b"<img " * (MEGABYTE // 5), b"<img width=1 " * (MEGABYTE // 13) + b"src=http://t.test/>"):
        parsed = parse(_html_message(markup))
        assert len(parsed.html) == len(markup)
        hits = {hit.check for hit in asf.advanced_checks(settings_.antispam.advanced, parsed, {})}
        assert hits == ({"javascript"} if b"<script" in markup
                        else {"web_bugs", "image_links_remote"} if b"src=" in markup else set())
    facts = routing_message.Facts(Envelope(mail_from="a@sender.test", rcpt_to=["b@rcpt.test"]),
                                  _html_message(b"<" * MEGABYTE), parse_policy("{}"), ["b@rcpt.test"], None)
    assert facts.body == "<" * MEGABYTE


def test_a_megabyte_of_white_space_without_a_line_end_is_kept_in_the_body_hash() -> None:
    # Ingress refuses lines over 998 octets, where the old pattern cost 0.8 s a megabyte (28 s for 35 MB);
    # a megabyte in one line shows the growth.
    assert dkimsign.relaxed_body(b"\t" * MEGABYTE + b"x") == b" x\r\n"
    assert dkimsign.relaxed_body(b"a \r\n" + b" " * MEGABYTE + b"x\r\n") == b"a\r\n x\r\n"
    assert dkimsign.relaxed_body(b"a" + b" \t" * MEGABYTE + b"\r\n") == b"a\r\n"


def test_a_megabyte_from_field_without_an_at_sign_has_no_sender_domain() -> None:
    content_ = parse(b"From: " + b"a" * MEGABYTE + b"\r\n\r\nbody\r\n")
    assert bulk.sender_domains(content_, "x" * MEGABYTE + "@") == []
    content_ = parse(b"From: " + b"a" * MEGABYTE + b"@bank.test\r\n\r\nbody\r\n")
    assert bulk.sender_domains(content_, "") == ["bank.test"]


def test_two_megabytes_of_unclosed_macros_in_an_spf_term() -> None:
    # A TXT answer holds about 64 KB (0.44 s for the old search); two megabytes run into the timeout with it.
    record = "v=spf1 a:" + "%%{" * (2 * MEGABYTE // 3) + "a -all"
    resolver = TableResolver({"evil.test": [("TXT", [record])]})
    result = asyncio.run(check_spf(resolver, "192.0.2.9", "a@evil.test", "h.evil.test"))
    assert result.result == "permerror" and "bad domain" in result.reason
