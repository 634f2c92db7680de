"""Author discipline at the end of DATA: one From with one mailbox that parses, from outside, when the
antispam stage is on; ``author_check: evaluate`` lets the antispam stage judge every author domain."""

from __future__ import annotations

import pytest

from mailmoat_ingress.author import NOT_COMPLIANT, check_author
from mailmoat_policy import Policy


def _policy(**antispam: object) -> Policy:
    return Policy.model_validate({"organization": {"hostname": "gw.test", "internal_networks": ["10.0.0.0/8"]},
                                  "accepted_domains": [{"domain": "example.com"}],
                                  "pipeline": {"filters": ["antispam"]}, "antispam": antispam})


def _message(*froms: bytes) -> bytes:
    return b"".join(b"From: " + f + b"\r\n" for f in froms) + b"To: a@example.com\r\nSubject: s\r\n\r\nbody\r\n"


REFUSED = [
    ((), "no From field"),
    ((b"<ceo@bank.test>, <x@evil.test>",), "From names 2 mailboxes"),
    ((b"<ceo@bank.test>", b"<x@evil.test>"), "2 From fields"),
    ((b"ceo@bank.test <x@evil.test>",), "From does not parse"),
    ((b"x@evil.test)<ceo@bank.test>",), "From does not parse"),
    ((b"=?utf-8?b?PGNlb0BiYW5rLnRlc3Q+?=",), "From does not parse"),
    ((b"undisclosed-recipients:;",), "From names no mailbox"),
]


@pytest.mark.parametrize(("froms", "why"), REFUSED)
def test_refused_from_outside(froms: tuple[bytes, ...], why: str) -> None:
    assert check_author(_message(*froms), _policy(), "203.0.113.5") == f"{NOT_COMPLIANT} ({why})"


@pytest.mark.parametrize(("froms", "why"), REFUSED)
def test_evaluate_accepts_what_names_an_author_domain(froms: tuple[bytes, ...], why: str) -> None:
    reply = check_author(_message(*froms), _policy(author_check="evaluate"), "203.0.113.5")
    nothing_to_judge = why in ("no From field", "From names no mailbox")
    assert reply == (f"{NOT_COMPLIANT} ({why})" if nothing_to_judge else None)


@pytest.mark.parametrize("froms", [(b"<ceo@bank.test>",), (b'"Ceo, Bank" <ceo@bank.test> (c)',),
                                   (b"G: ceo@bank.test;",)])
def test_one_author_passes(froms: tuple[bytes, ...]) -> None:
    assert check_author(_message(*froms), _policy(), "203.0.113.5") is None


def test_not_checked_from_inside_or_without_the_antispam_stage() -> None:
    data = _message(b"<a@example.com>", b"<b@example.com>")
    assert check_author(data, _policy(), "10.1.2.3") is None
    plain = Policy.model_validate({"accepted_domains": [{"domain": "example.com"}]})
    assert check_author(data, plain, "203.0.113.5") is None


def test_the_reply_is_ascii_whatever_the_field_holds() -> None:
    reply = check_author(_message("Jörg <jörg@bänk.test> <x@evil.test>".encode()), _policy(), "203.0.113.5")
    assert reply is not None and reply.isascii() and reply.startswith("550 5.7.512 ")
