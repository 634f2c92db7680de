"""Mailgun flanker's mailbox test sets (tests/data/flanker/) against the parser of the ``From:`` field
(``mailmoat_mail.author``), the one every author decision reads.

A valid mailbox must parse to exactly one mailbox whose domain is the one written after its last ``@``, as
a mail client shows it; an invalid one must not parse, and ``read_author`` must then name a problem. Lines
answered otherwise are in ``EXCEPTIONS``, with the reason.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mailmoat_mail.author import AuthorError, parse_mailboxes, read_author

DATA = Path(__file__).resolve().parent.parent / "data" / "flanker"

_OBSOLETE = ("taken: RFC 5322 4.4's obsolete local part (words, atoms or quoted strings, joined by dots), "
             "which the parser reads")
EXCEPTIONS: dict[bytes, str] = {
    b'Bill Gates <"billy"@retired.Micr!osoft99.com>':
        "refused: '!' is atext, so RFC 5322 allows it in a domain, but no host or DMARC record has that name",
    b'partially."quoted"@sld.com': _OBSOLETE,
    b'first."".last@iana.org': _OBSOLETE,
    b'"foo"(yay)@(hoopla)[1.2.3.4]': "taken: comments around the '@' and a domain literal are RFC 5322 3.4.1 "
                                      "(CFWS), and a literal has no DMARC domain",
    b"test@xn--example.com": "taken: 'xn--example' has the shape of an A-label; whether it decodes is the "
                             "resolver's question, and it names no domain a client would show differently",
}
_LONG_LOCAL = re.compile(rb"^\d{1000,}@example\.com$")
"""A local part of over 1,000 digits: taken, as RFC 5322 sets no size (RFC 5321's 64 octets are SMTP's)."""


def _lines(name: str) -> list[bytes]:
    lines = (DATA / name).read_bytes().split(b"\n")
    return [line.rstrip(b"\r") for line in lines if line.strip() and not line.startswith(b"#")]


def _written_domain(line: bytes) -> str:
    """The domain after the last '@' of the address as written (in angle brackets when there are any, a
    trailing comment left out), lower case."""
    text = line.decode("utf-8")
    if text.endswith(">"):
        text = text[text.rindex("<") + 1:-1]
    text = re.sub(r"\s*\([^()]*\)$", "", text)
    return text.rsplit("@", 1)[1].lower()


def _excepted(line: bytes) -> bool:
    return line in EXCEPTIONS or bool(_LONG_LOCAL.match(line))


VALID = _lines("mailbox_valid.txt")
INVALID = _lines("mailbox_invalid.txt")


def test_the_sets_are_there() -> None:
    assert len(VALID) >= 150 and len(INVALID) >= 85


@pytest.mark.parametrize("line", VALID, ids=lambda line: line.decode("utf-8", "replace")[:60])
def test_a_valid_mailbox_is_read_as_written(line: bytes) -> None:
    if _excepted(line):
        with pytest.raises(AuthorError):
            parse_mailboxes(line)
        return
    (mailbox,) = parse_mailboxes(line)
    assert mailbox.domain == _written_domain(line)
    author = read_author(b"From: " + line + b"\r\n\r\n")
    assert author.problem is None and author.single == mailbox


@pytest.mark.parametrize("line", INVALID, ids=lambda line: line.decode("utf-8", "replace")[:60])
def test_an_invalid_mailbox_is_refused(line: bytes) -> None:
    if _excepted(line):
        assert parse_mailboxes(line)
        return
    with pytest.raises(AuthorError):
        parse_mailboxes(line)
    assert read_author(b"From: " + line + b"\r\n\r\n").problem is not None


def test_every_exception_is_in_a_set() -> None:
    assert set(EXCEPTIONS) <= set(VALID) | set(INVALID)
