"""Address parsing: any MAIL FROM / RCPT TO argument is either a path egress can send unchanged or an
``AddressError`` (syntax, utf8 or param)."""

from __future__ import annotations

from mailmoat_egress.pipelining import envelope_commands
from mailmoat_mail.addresses import AddressError, parse_mail, parse_rcpt, sendable


def _sent_unchanged(address: str, utf8: bool) -> None:
    """What egress does with an accepted address: check it, quote it with aiosmtplib, read it back."""
    if not address:
        return
    assert sendable(address, utf8=utf8) is None, address
    encoding = "ascii" if address.isascii() else "utf-8"
    mail, rcpt, _ = envelope_commands(address, [], [address], encoding)
    assert mail == b"MAIL FROM:<" + address.encode(encoding) + b">\r\n", (address, mail)
    again = parse_rcpt(rcpt.decode(encoding)[len("RCPT TO:"):-2], utf8=utf8).path.address
    assert again == address, (address, again)


def test_one_input(data: bytes) -> None:
    text = data.decode("utf-8", "surrogateescape")
    try:
        command = parse_mail(text)
    except AddressError as exc:
        assert exc.kind in ("syntax", "utf8", "param")
    else:
        _sent_unchanged(command.path.address, "SMTPUTF8" in command.params)
    for utf8 in (False, True):
        try:
            found = parse_rcpt(text, utf8=utf8)
        except AddressError as exc:
            assert exc.kind in ("syntax", "utf8", "param")
            continue
        if not found.path.postmaster:
            _sent_unchanged(found.path.address, utf8)


def seeds() -> list[bytes]:
    return [
        b"<alice@example.com>", b"<> SIZE=1000 BODY=8BITMIME", b"<s@sender.test> SMTPUTF8",
        b'<"unterminated@sender.invalid>', b"t@x", b"<t@x", b"<a b@x>", b"<t@[300.1.1.1]>", b"<t@-bad-.invalid>",
        b"<t@x> BODY=7BIT BODY=8BITMIME", "<jörg@münchen.example> SMTPUTF8".encode(), b"<j\xffrg@example.com>",
        b"<victim%external.invalid@example.com>", b"<external.invalid!victim@example.com>",
        b'<"victim@external.invalid"@example.com>', b"<@hop.example,@b.example:a@example.com>", b"<Postmaster>",
        b"<a@[IPv6:2001:db8::1]>", b'<"a\\"b c"@[192.0.2.1]>', b"<first.last+tag@sub.example.com> NOTIFY=NEVER",
    ]
