"""The author parser: the RFC 5322 grammar, the From shapes of issue 14, and properties over generated
From headers (a mailbox rendered in any syntax parses back to itself; parsing never raises; the
domains DMARC judges are the ones a client displays)."""

from __future__ import annotations

import base64
import email.policy
import time
from email.parser import HeaderParser

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mailmoat_mail.author import AuthorError, Mailbox, parse_mailboxes, read_author, recover


@pytest.mark.parametrize(("value", "expected"), [
    ("ceo@bank.test", [("", "ceo@bank.test")]),
    ("<ceo@bank.test>", [("", "ceo@bank.test")]),
    ("Ceo <ceo@Bank.Test>", [("Ceo", "ceo@bank.test")]),
    ('"Doe, Jane" <jane@bank.test>', [("Doe, Jane", "jane@bank.test")]),
    ('"ceo@bank.test" <x@evil.test>', [("ceo@bank.test", "x@evil.test")]),
    ("jane@bank.test (Jane Doe)", [("Jane Doe", "jane@bank.test")]),  # the comment is the name a client shows
    ("jane@bank.test (=?utf-8?q?J=C3=B6rg?=) (x)", [("Jörg x", "jane@bank.test")]),
    ("(comment (nested)) Jane <jane@bank.test> (after)", [("Jane", "jane@bank.test")]),
    ("<@relay.test,@other.test:ceo@bank.test>", [("", "ceo@bank.test")]),  # obs-route
    ("john . doe @ bank . test", [("", "john.doe@bank.test")]),  # obs-local-part, obs-domain
    ("J. R. Doe <jrd@bank.test>", [("J. R. Doe", "jrd@bank.test")]),  # obs-phrase
    ("=?utf-8?q?J=C3=B6rg?= <j@bank.test>", [("Jörg", "j@bank.test")]),
    ("=?utf-8?q?a?= =?utf-8?q?b?= <j@bank.test>", [("ab", "j@bank.test")]),  # RFC 2047 6.2
    ('"=?utf-8?b?Y2VvQGJhbmsudGVzdA==?=" <x@evil.test>', [("ceo@bank.test", "x@evil.test")]),
    ("=?utf-8?q?ceo=40bank.test?= <x@evil.test>", [("ceo@bank.test", "x@evil.test")]),  # a dot in a Q word
    ("Friends: a@one.test, B <b@two.test>;", [("", "a@one.test"), ("B", "b@two.test")]),  # RFC 6854 group
    ("undisclosed-recipients:;", []),
    (", a@one.test,,", [("", "a@one.test")]),  # obs-mbox-list
    ("j@bänk.test", [("", "j@bänk.test")]),  # RFC 6532
    ("j@[192.0.2.1]", [("", "j@[192.0.2.1]")]),
])
def test_grammar(value: str, expected: list[tuple[str, str]]) -> None:
    assert [(m.name, m.address) for m in parse_mailboxes(value)] == expected


@pytest.mark.parametrize("value", [
    "ceo@bank.test <x@evil.test>",  # an address where a display name belongs
    "x@evil.test)<ceo@bank.test>",  # CVE-2023-27043 class
    "=?utf-8?b?PGNlb0BiYW5rLnRlc3Q+?=",  # an encoded word that decodes to <ceo@bank.test>: no address
    "Jane Doe",
    "<ceo@bank.test",
    '"unterminated <ceo@bank.test>',
    "(unterminated <ceo@bank.test>",
    "ceo@bank.test>",
    "ceo@@bank.test",
    "ceo@bank..test",
    "ceo@bank.test.",
    "ceo@-bank.test",
    "a b@bank.test",
    "<ceo@bank.test> <x@evil.test>",
    "G: a@one.test",  # group not closed
    "G: H: a@one.test;;",  # nested group
    ".x <a@b.test>",
])
def test_refused(value: str) -> None:
    with pytest.raises(AuthorError):
        parse_mailboxes(value)


def test_empty_field_names_no_mailbox() -> None:
    assert parse_mailboxes("") == []
    assert read_author(b"From: \r\n\r\n").problem == "From names no mailbox"


def _msg(*froms: bytes) -> bytes:
    return b"".join(b"From: " + f + b"\r\n" for f in froms) + b"To: a@example.com\r\n\r\nbody\r\nFrom: <z@z.test>\r\n"


@pytest.mark.parametrize(("data", "problem", "domains"), [
    (_msg(b"<ceo@bank.test>"), None, ["bank.test"]),
    (_msg(b"<ceo@bank.test>, <x@evil.test>"), "From names 2 mailboxes", ["bank.test", "evil.test"]),
    (_msg(b"<ceo@bank.test>", b"<x@evil.test>"), "2 From fields", ["bank.test", "evil.test"]),
    (_msg(b"ceo@bank.test <x@evil.test>"), "From does not parse", ["bank.test", "evil.test"]),
    (_msg(b"x@evil.test)<ceo@bank.test>"), "From does not parse", ["evil.test", "bank.test"]),
    (_msg(b"=?utf-8?b?PGNlb0BiYW5rLnRlc3Q+?="), "From does not parse", ["bank.test"]),
    (_msg(), "no From field", []),
    (b"Subject: x\r\n\r\nFrom: <ceo@bank.test>\r\n", "no From field", []),  # a From in the body is no author
    (b"From : Ann\r\n <ann@one.test>\r\n\r\n", None, ["one.test"]),  # obs-from, folded
    (b"fROM: ann@one.test\r\n\r\n", None, ["one.test"]),
    (b"From: \xff\xfe <ann@one.test>\r\n\r\n", None, ["one.test"]),  # raw 8-bit bytes in the name
    (b"From: ann@b\xc3\xa4nk.test\r\n\r\n", None, ["xn--bnk-qla.test"]),
])
def test_read_author(data: bytes, problem: str | None, domains: list[str]) -> None:
    author = read_author(data)
    assert (author.problem or "").startswith(problem or "") and (author.problem is None) == (problem is None)
    assert author.domains == domains


def test_recover_reads_comments_and_encoded_words() -> None:
    assert recover("(ceo@bank.test) =?utf-8?q?x=40evil=2Etest?= junk <") == ["ceo@bank.test", "x@evil.test"]


# --- properties -------------------------------------------------------------------------------------

_ATEXT = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~"
atoms = st.text(_ATEXT, min_size=1, max_size=8)
locals_ = st.lists(atoms, min_size=1, max_size=3).map(".".join)
labels = st.from_regex(r"\A[a-z0-9](?:[a-z0-9-]{0,8}[a-z0-9])?\Z")
domains = st.lists(labels, min_size=2, max_size=4).map(".".join)
names = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x2FF, blacklist_categories=("Cc", "Cs", "Zs")),
                max_size=12).map(lambda s: " ".join(s.split()))


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _encoded(text: str) -> str:
    return "=?utf-8?b?" + base64.b64encode(text.encode()).decode() + "?="


def _q_encoded(text: str) -> str:
    """An RFC 2047 Q word as senders write it: letters, digits and dots left as they are (the dots split
    it into several words for the grammar; clients decode it whole)."""
    plain = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.")
    return "=?utf-8?q?" + "".join(chr(b) if chr(b) in plain else "_" if b == 0x20 else f"={b:02X}"
                                  for b in text.encode()) + "?="


def _renderings(local: str, domain: str, name: str) -> list[tuple[str, str]]:
    """(From value, the display name a client shows) for one mailbox."""
    address = f"{local}@{domain}"
    out = [(address, ""), (f"<{address}>", ""), (f"{address} (a comment)", "a comment"),
           (f"<@relay.test:{address}>", ""), (f"Group: {address};", ""), (f" ,{address},", "")]
    if name:
        out += [(f"{_quoted(name)} <{address}>", name), (f"{_encoded(name)} <{address}>", name),
                (f"{_q_encoded(name)} <{address}>", name), (f"(c) {_quoted(name)}\r\n <{address}> (c)", name)]
        if all(part.isascii() and all(c in _ATEXT for c in part) for part in name.split()):
            out.append((f"{name} <{address}>", name))
    return out


@given(locals_, domains, names)
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_a_mailbox_in_any_syntax_parses_back(local: str, domain: str, name: str) -> None:
    for value, shown in _renderings(local, domain, name):
        assert parse_mailboxes(value) == [Mailbox(shown, local, domain)], value
        author = read_author(f"From: {value}\r\nSubject: s\r\n\r\n".encode())
        assert author.problem is None and author.domains == [domain]


@given(locals_, domains, names)
@settings(max_examples=200)
def test_agrees_with_a_client_on_well_formed_headers(local: str, domain: str, name: str) -> None:
    """Python's RFC 5322 header parser (email.policy.default) stands in for a mail client (it ignores
    the comment after a bare address, which clients show as the name, so that rendering is left out)."""
    for value, shown in _renderings(local, domain, name)[:2] + _renderings(local, domain, name)[6:9]:
        text = f"From: {value}\r\n\r\n"
        header = HeaderParser(policy=email.policy.default).parsestr(text)["from"]
        client = [(a.display_name, a.addr_spec.lower()) for a in header.addresses]
        assert client == [(shown, f"{local}@{domain}".lower())]
        assert read_author(text.encode()).domains == [domain]


@given(st.binary(max_size=300))
@settings(max_examples=500)
def test_never_raises_on_bytes(value: bytes) -> None:
    author = read_author(b"From: " + value + b"\r\n\r\n")
    assert isinstance(author.domains, list) and (author.problem is None) == (author.single is not None)


@given(st.text(max_size=200))
@settings(max_examples=500)
def test_parse_raises_only_author_error(value: str) -> None:
    try:
        parse_mailboxes(value)
    except AuthorError:
        pass


@given(st.lists(st.tuples(locals_, domains), min_size=1, max_size=3), st.sampled_from(["fields", "list", "name"]))
@example([("0", "0.0"), ("'", "0.1")], "name")
@settings(max_examples=200)
def test_every_displayed_domain_is_judged(mailboxes: list[tuple[str, str]], shape: str) -> None:
    """However several addresses are packed into From, every domain a client shows is an author domain."""
    addresses = [f"{local}@{domain}" for local, domain in mailboxes]
    if shape == "fields":
        head = "".join(f"From: <{a}>\r\n" for a in addresses)
    elif shape == "list":
        head = "From: " + ", ".join(f"<{a}>" for a in addresses) + "\r\n"
    else:
        head = "From: " + " ".join(addresses[1:]) + f" <{addresses[0]}>\r\n"
    author = read_author((head + "\r\n").encode())
    for _, domain in mailboxes:
        assert domain in author.domains
    assert (author.problem is None) == (len(mailboxes) == 1)


@pytest.mark.parametrize("value", [b"a" * 16000, b"a." * 8000, b"a@" * 8000, b"=?a?q?" * 2600, b"((" * 8000,
                                   b'"a".' * 4000 + b"@b"])
def test_linear_time_on_long_fields(value: bytes) -> None:
    """A long From that does not parse is read in milliseconds (the lenient reading once took seconds)."""
    started = time.perf_counter()
    read_author(b"From: " + value + b"\r\nFrom: " + value + b"\r\n\r\n")
    assert time.perf_counter() - started < 1.0
