"""The author parser on arbitrary bytes: as a whole message and as one From field's value. It never
raises but ``AuthorError`` for a field; what it reports is consistent (one author exactly when there is
no problem, DNS-valid domains, lower-case addresses, ASCII-only SMTP replies); every mailbox it parses
parses back to itself written canonically; the ingress author check and impersonation finding run on
the result."""

from __future__ import annotations

import re

from mailmoat_antispam import impersonation
from mailmoat_ingress.author import check_author
from mailmoat_mail.author import AuthorError, Mailbox, dns_name, parse_mailboxes, read_author
from mailmoat_policy import Policy

POLICY = Policy.model_validate({
    "accepted_domains": [{"domain": "example.com"}],
    "pipeline": {"filters": ["antispam"]},
    "antispam": {"impersonation": {"protected_users": [{"name": "Jane Doe", "address": "jane@example.com"}],
                                   "protected_domains": ["bank.test"]}},
})
_DOT_ATOM = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~\u0080-\U0010ffff-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~"
                       r"\u0080-\U0010ffff-]+)*$")


def _canonical(mailbox: Mailbox) -> str:
    local = mailbox.local
    if not _DOT_ATOM.match(local) or not local.isprintable():
        local = '"' + local.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"<{local}@{mailbox.domain}>"


def _check(data: bytes) -> None:
    author = read_author(data)
    assert (author.problem is None) == (author.single is not None), author
    assert author.fields >= len(author.errors)
    for domain in author.domains:
        assert domain and domain == dns_name(domain), (domain, author)
    for address in author.addresses:
        assert address == address.lower() and "@" in address, address
    assert isinstance(author.display(), str)
    reply = check_author(data, POLICY, "203.0.113.9")
    assert reply is None or (reply.isascii() and reply.startswith("550 5.7.512 ") and "\n" not in reply), reply
    impersonation.find(author, POLICY, outside=True)
    for mailbox in author.mailboxes:
        text = _canonical(mailbox)
        if all(c.isprintable() for c in text):
            again = parse_mailboxes(text)
            assert [(m.local, m.domain) for m in again] == [(mailbox.local, mailbox.domain)], (text, again)


def test_one_input(data: bytes) -> None:
    _check(data)
    _check(b"From: " + data + b"\r\nSubject: s\r\n\r\nbody\r\n")
    try:
        parse_mailboxes(data)
    except AuthorError:
        pass


def seeds() -> list[bytes]:
    values = [
        b"<ceo@bank.test>", b"<ceo@bank.test>, <x@evil.test>", b"ceo@bank.test <x@evil.test>",
        b"x@evil.test)<ceo@bank.test>", b'"ceo@bank.test" <x@evil.test>', b"=?utf-8?b?PGNlb0BiYW5rLnRlc3Q+?=",
        b"Friends: a@one.test, B <b@two.test>;", b"undisclosed-recipients:;", b"<@relay.test,@b.test:ceo@bank.test>",
        b"john . doe @ bank . test (comment (nested))", b"=?utf-8?q?J=C3=B6rg?= <j@b\xc3\xa4nk.test>",
        b'"Doe, \\"Jane\\"" <jane@bank.test>', b"j@[192.0.2.1]", b"\xff\xfe <a@b.test>", b"Jane Doe <jd@freemail.test>",
    ]
    messages = [b"From: " + v + b"\r\nTo: a@example.com\r\n\r\nbody\r\n" for v in values]
    messages.append(b"From: <ceo@bank.test>\r\nFrom: <x@evil.test>\r\n\r\n")
    messages.append(b"From : Ann\r\n <ann@one.test>\r\nSubject: s\r\n\r\n")
    messages.append(b"From\r\n : <ceo@bank.test>\r\nFrom: <x@evil.test>\r\n\r\n")  # espoofer A11, reversed
    messages.append(b" From: <ceo@bank.test>\r\nFrom: <x@evil.test>\r\n\r\n")  # espoofer A9, reversed
    return values + messages
