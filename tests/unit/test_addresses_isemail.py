"""Dominic Sayers' is_email test set (version 3.05, 164 addresses, tests/data/isemail/) against the address
grammar of ``RCPT TO`` (``mailmoat_mail.addresses.parse_rcpt``, as ingress calls it).

Each address is put in a forward path, ``<address>``, as a client writes it on the command line. What an
RFC 5321 server must answer follows from the suite's category: an address is accepted when its syntax is
valid RFC 5321 (``ISEMAIL_VALID_CATEGORY``; ``ISEMAIL_DNSWARN``, as DNS is not the parser's business;
``ISEMAIL_RFC5321``: a quoted local part, an address literal, a TLD-only or numeric domain, all in the
Mailbox grammar of RFC 5321 4.1.2 and 4.1.3) and refused otherwise (``ISEMAIL_ERR``; ``ISEMAIL_CFWS``,
``ISEMAIL_DEPREC`` and ``ISEMAIL_RFC5322``: comments, folding whitespace, obsolete forms, domain literals
other than IPv4 and ``IPv6:`` (no other address literal tag is registered), and objects over the sizes of
RFC 5321 4.5.3.1).

The parser does not enforce the sizes of RFC 5321 4.5.3.1.1 (local part, 64 octets) and 4.5.3.1.3 (path,
256 octets): that section asks for no limits where possible and every implementation to take at least those
sizes, so a server MAY take more; the 512-octet command line (aiosmtpd's ``command_size_limit``, 4.5.3.1.4)
bounds them. It does enforce 255 octets for a domain (4.5.3.1.2) and 63 for a label (RFC 1035 2.3.4). Those
answers, and the others that differ from the category's, are in ``EXCEPTIONS``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import pytest

from mailmoat_mail.addresses import AddressError, parse_mail, parse_rcpt, sendable

SUITE = Path(__file__).resolve().parent.parent / "data" / "isemail" / "tests.xml"

ACCEPTED = frozenset({"ISEMAIL_VALID_CATEGORY", "ISEMAIL_DNSWARN", "ISEMAIL_RFC5321"})
REFUSED = frozenset({"ISEMAIL_ERR", "ISEMAIL_CFWS", "ISEMAIL_DEPREC", "ISEMAIL_RFC5322"})

_LOCAL_PART_SIZE = "a local part over 64 octets (RFC 5321 4.5.3.1.1), taken: a server MAY take larger objects"
_PATH_SIZE = ("a path over 256 octets (RFC 5321 4.5.3.1.3; local part and domain within their sizes), taken: "
              "a server MAY take larger objects, and the 512-octet command line bounds it")

EXCEPTIONS: dict[str, tuple[bool, str]] = {
    "26": (True, _LOCAL_PART_SIZE),
    "59": (True, _LOCAL_PART_SIZE),
    "60": (True, _LOCAL_PART_SIZE),
    "39": (True, _PATH_SIZE),
    "40": (True, _PATH_SIZE),
    "71": (True, "'::' for one group of zeros, which RFC 5321 4.1.3 IPv6-comp forbids (at most 6 groups besides "
                 "'::'), taken: RFC 4291 2.2 allows it and it names the same address"),
}
"""Addresses whose answer is not the one their category calls for: suite test id -> (accepted, why)."""


@dataclass(frozen=True)
class IsEmailCase:
    id: str
    address: str
    """With the control characters the suite writes as Control Pictures."""
    category: str
    diagnosis: str


def _control_characters(text: str) -> str:
    """The suite writes a control character as its Unicode Control Picture: U+2400 + its code (notes at the
    top of tests.xml), and DEL as U+2421."""
    return "".join(
        chr(ord(char) - 0x2400) if "\u2400" <= char <= "\u241f" else "\x7f" if char == "\u2421" else char
        for char in text
    )


def load_cases(path: Path = SUITE) -> list[IsEmailCase]:
    root = ET.parse(path).getroot()
    return [
        IsEmailCase(
            test.attrib["id"],
            _control_characters(test.findtext("address") or ""),
            test.findtext("category") or "",
            test.findtext("diagnosis") or "",
        )
        for test in root.iter("test")
    ]


CASES = load_cases()


def by_category(case: IsEmailCase) -> bool:
    """Whether an RFC 5321 server accepts the address, by the suite's category."""
    if case.category in ACCEPTED:
        return True
    assert case.category in REFUSED, case.category
    return False


def expected(case: IsEmailCase) -> bool:
    if case.id in EXCEPTIONS:
        return EXCEPTIONS[case.id][0]
    return by_category(case)


def rcpt_accepts(case: IsEmailCase, *, utf8: bool) -> bool:
    """``RCPT TO:<address>``: accepted, or refused with a syntax error (``501 5.1.3`` at ingress)."""
    try:
        command = parse_rcpt(f"<{case.address}>", utf8=utf8)
    except AddressError as exc:
        assert exc.kind == "syntax", (exc.kind, exc.reason)
        return False
    assert command.path.mailbox is not None and not command.path.route and not command.params
    return True


def test_the_whole_suite_is_loaded() -> None:
    assert len(CASES) == 164
    assert len({c.id for c in CASES}) == 164
    assert {c.category for c in CASES} == ACCEPTED | REFUSED
    assert sum(by_category(c) for c in CASES) == 38


def test_control_characters_are_read_back() -> None:
    addresses = {c.id: c.address for c in CASES}
    assert addresses["57"] == '"test\x00"@iana.org'
    assert addresses["88"] == "\r\n test@iana.org"
    assert addresses["122"] == "\x7f@iana.org"
    assert addresses["136"] == "\x07@iana.org"
    assert not any("\u2400" <= char <= "\u2421" for c in CASES for char in c.address)


def test_the_exceptions_are_exact() -> None:
    """Each exception names a test of the suite whose category calls for the other answer: an entry no
    longer needed fails here or in ``test_rcpt_to`` (which asserts the exception's answer)."""
    by_id = {c.id: c for c in CASES}
    for case_id, (accepted, reason) in EXCEPTIONS.items():
        assert case_id in by_id, case_id
        assert by_category(by_id[case_id]) != accepted, case_id
        assert reason, case_id


@pytest.mark.parametrize("case", CASES, ids=[f"{c.id}-{c.diagnosis.removeprefix('ISEMAIL_')}" for c in CASES])
def test_rcpt_to(case: IsEmailCase) -> None:
    accepted = rcpt_accepts(case, utf8=False)
    assert accepted == expected(case), (case.address, case.diagnosis)
    # SMTPUTF8 changes nothing for these (ASCII, or refused anyway)
    assert rcpt_accepts(case, utf8=True) == accepted
    # MAIL FROM reads the path by the same grammar (where <> is the null sender)
    if case.address:
        try:
            parse_mail(f"<{case.address}>")
        except AddressError:
            assert not accepted
        else:
            assert accepted
    # what ingress takes, egress can send, as ingress keeps it
    if accepted:
        kept = parse_rcpt(f"<{case.address}>", utf8=False).path.address
        assert sendable(kept, utf8=False) is None
