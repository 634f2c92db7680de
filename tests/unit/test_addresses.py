"""The gateway's one address grammar (RFC 5321 4.1.2, RFC 6531), and its promise: whatever ingress
accepts, egress sends unchanged (a hypothesis property over egress's own command builder)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mailmoat_egress.pipelining import envelope_commands
from mailmoat_mail.addresses import (
    AddressError,
    Mailbox,
    mailbox,
    parse_mail,
    parse_rcpt,
    recipient_key,
    routing_trick,
    sendable,
)


@pytest.mark.parametrize(
    ("arg", "address", "params"),
    [
        ("<a@b.c>", "a@b.c", {}),
        ("<a@b.c> SIZE=10 body=8BITMIME", "a@b.c", {"SIZE": "10", "BODY": "8BITMIME"}),
        ("<>", "", {}),
        ("<> SIZE=1", "", {"SIZE": "1"}),
        (" <first.last+tag@sub.example.com>", "first.last+tag@sub.example.com", {}),
        ('<"q u"@b.c>', '"q u"@b.c', {}),
        ('<"a\\"b"@b.c>', '"a\\"b"@b.c', {}),
        ('<"abc"@b.c>', "abc@b.c", {}),  # canonical form: quotes that are not needed go
        ('<"\\ x"@b.c>', '" x"@b.c', {}),
        ("<a@[127.0.0.1]>", "a@[127.0.0.1]", {}),
        ("<a@[IPv6:2001:db8::1]>", "a@[IPv6:2001:db8::1]", {}),
        ("<a@[IPv6:::ffff:192.0.2.1]>", "a@[IPv6:::ffff:192.0.2.1]", {}),
        ("<@relay.example,@r2.example:a@b.c>", "a@b.c", {}),
        ("<jos\u00e9@m\u00fcnchen.example> SMTPUTF8", "jos\u00e9@m\u00fcnchen.example", {"SMTPUTF8": None}),
        ("<a@M\u00dcNCHEN.example> SMTPUTF8", "a@M\u00dcNCHEN.example", {"SMTPUTF8": None}),  # kept as written
        ("<a@b.c>  SIZE=5", "a@b.c", {"SIZE": "5"}),
    ],
)
def test_mail_paths_that_parse(arg: str, address: str, params: dict[str, str | None]) -> None:
    command = parse_mail(arg)
    assert command.path.address == address
    assert command.params == params


@pytest.mark.parametrize(
    ("arg", "kind"),
    [
        ('<"unterminated@sender.invalid>', "syntax"),
        ("t@x", "syntax"),  # no angle brackets
        ("<t@x", "syntax"),
        ("<a b@x>", "syntax"),
        ("<t@[300.1.1.1]>", "syntax"),
        ("<t@[1.2.3]>", "syntax"),
        ("<t@[\u0661.\u0662.\u0663.\u0664]> SMTPUTF8", "syntax"),  # Snum is ASCII digits, UTF-8 or not
        ("<t@[192.0.2.\uff11]> SMTPUTF8", "syntax"),
        ("<t@[IPv6:::1%eth0]>", "syntax"),
        ("<t@[IPv6:12345::]>", "syntax"),
        ("<t@[tag:x]>", "syntax"),
        ("<t@-bad-.invalid>", "syntax"),
        ("<t@bad-.invalid>", "syntax"),
        ("<t@example.com.>", "syntax"),
        ("<t@exa_mple.com>", "syntax"),
        ("<t@" + "a" * 64 + ".com>", "syntax"),
        ("<t@" + ".".join(["abcdefgh"] * 30) + ">", "syntax"),
        ("<a..b@x>", "syntax"),
        ("<.a@x>", "syntax"),
        ("<a.@x>", "syntax"),
        ("<a@b.c>x", "syntax"),
        ("<a@>", "syntax"),
        ("<@b.c>", "syntax"),
        ("<a>", "syntax"),
        ("<<a@b.c>>", "syntax"),
        ("<a@b.c\udcff>", "syntax"),  # a byte that was not UTF-8 (aiosmtpd's surrogate escape)
        ("<j\udcffrg@example.com> SMTPUTF8", "syntax"),
        ("<a\x00b@c.d>", "syntax"),
        ("<a@b.c>\tSIZE=5", "syntax"),  # RFC 5321: SP, and a tab is a control character
        ('<"a\x7f"@c.d>', "syntax"),
        ("<a\u00a0b@c.d> SMTPUTF8", "syntax"),  # Unicode whitespace
        ("<a@xn--a.com\u3000> SMTPUTF8", "syntax"),
        # not U-labels (RFC 5890): IDNA mapping would make them another domain than the one written
        ("<a@example\u3002com> SMTPUTF8", "syntax"),  # ideographic full stop, a label separator
        ("<a@example\uff0ecom> SMTPUTF8", "syntax"),
        ("<a@\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.com> SMTPUTF8", "syntax"),  # fullwidth: example.com
        ("<a@\ufb01sh.example> SMTPUTF8", "syntax"),  # the ligature: fish.example
        ("<a@mu\u0308nchen.example> SMTPUTF8", "syntax"),  # not NFC
        ("<@:a@b.c>", "syntax"),
        ("<j\u00f6rg@example.com>", "utf8"),
        ("<a@m\u00fcnchen.example>", "utf8"),
        ("<a@b.c> BODY=7BIT BODY=8BITMIME", "param"),
        ("<a@b.c> SIZE=1 size=2", "param"),
        ("<a@b.c> SIZE=", "param"),
        ("<a@b.c> =x", "param"),
        ("<a@b.c> -X=1", "param"),
        ("<a@b.c> X=a=b", "param"),
        ("<a@b.c> X-Y=\u00e9", "param"),
    ],
)
def test_mail_paths_that_do_not(arg: str, kind: str) -> None:
    with pytest.raises(AddressError) as caught:
        parse_mail(arg)
    assert caught.value.kind == kind


def test_rcpt_postmaster_and_utf8_from_the_transaction() -> None:
    for form in ("<Postmaster>", "<postmaster>", "<POSTMASTER>"):
        path = parse_rcpt(form, utf8=False).path
        assert path.postmaster and path.address == "Postmaster"
    with pytest.raises(AddressError):
        parse_rcpt("<>", utf8=False)
    with pytest.raises(AddressError) as caught:
        parse_rcpt("<j\u00f6rg@example.com>", utf8=False)
    assert caught.value.kind == "utf8"
    assert parse_rcpt("<j\u00f6rg@example.com>", utf8=True).path.address == "j\u00f6rg@example.com"
    assert parse_rcpt("<a@b.c> NOTIFY=NEVER", utf8=False).params == {"NOTIFY": "NEVER"}


@pytest.mark.parametrize(
    ("arg", "trick"),
    [
        ("<victim%external.invalid@example.com>", "% in the local part"),
        ("<external.invalid!victim@example.com>", "! in the local part"),
        ('<"victim@external.invalid"@example.com>', "@ in the local part"),
        ("<@external.invalid:victim@example.com>", "source route"),
        ("<victim@example.com>", None),
        ('<"v i"@example.com>', None),
    ],
)
def test_routing_tricks(arg: str, trick: str | None) -> None:
    assert routing_trick(parse_rcpt(arg, utf8=False).path) == trick


def test_recipient_key_folds_the_local_part_only_when_asked() -> None:
    assert recipient_key(Mailbox("Bob", "Example.COM"), fold_local=True) == "bob@example.com"
    assert recipient_key(Mailbox("Bob", "Example.COM"), fold_local=False) == "Bob@example.com"
    assert recipient_key(Mailbox('"bob"', "x.org"), fold_local=True) == recipient_key(Mailbox("BOB", "x.org"),
                                                                                        fold_local=True)


def test_sendable() -> None:
    assert sendable("", utf8=False) is None
    assert sendable("a@b.c", utf8=False) is None
    assert sendable('"unterminated@sender.invalid', utf8=False) is not None
    assert sendable("j\u00f6rg@example.com", utf8=False) is not None
    assert sendable("j\u00f6rg@example.com", utf8=True) is None


# --- the property: accepted by ingress => sent unchanged by egress ---------------------------------------

_ATEXT = "abcXYZ019!#$%&'*+/=?^_`{|}~-"
_NON_ASCII = "\u00e9\u00f6\u00df\u4e2d\u0416\u00a0\u2028\u3000\u0085\u200d\U0001f600"
atom = st.text(st.sampled_from(_ATEXT + _NON_ASCII), min_size=1, max_size=6)
dot_string = st.lists(atom, min_size=1, max_size=3).map(".".join)
qcontent = st.one_of(
    st.sampled_from(list(' !#$%()*,:;<>@[]^`{|}~aZ0.') + list(_NON_ASCII)),
    st.sampled_from(list(' "\\ab@<>')).map(lambda c: "\\" + c),
)
quoted = st.lists(qcontent, max_size=6).map(lambda parts: '"' + "".join(parts) + '"')
label = st.one_of(
    st.from_regex(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,8}[A-Za-z0-9])?", fullmatch=True),
    st.sampled_from(["m\u00fcnchen", "xn--mnchen-3ya", "\u4e2d\u6587", "-x", "x-", "a_b", ""]),
)
domain = st.one_of(
    st.lists(label, min_size=1, max_size=3).map(".".join),
    st.tuples(*[st.integers(0, 300)] * 4).map(lambda t: "[" + ".".join(map(str, t)) + "]"),
    st.sampled_from(["[IPv6:::1]", "[IPv6:2001:db8::a:b]", "[IPv6:::ffff:1.2.3.4]", "[IPv6:zz::]", "[x:y]"]),
)
address = st.builds(lambda local, dom: f"{local}@{dom}", st.one_of(dot_string, quoted), domain)
noise = st.text(st.sampled_from([*'<>"@\\. \t:,[]%!aé\x00\r', "\udcff"]), max_size=12)


def _egress_sends(accepted: str, utf8: bool) -> None:
    """What egress does with an address ingress put in the envelope: check it, then build the command
    lines with aiosmtplib's quoting, in the encoding it would use (UTF-8 only for non-ASCII)."""
    assert sendable(accepted, utf8=utf8) is None
    encoding = "ascii" if accepted.isascii() else "utf-8"
    mail, rcpt, _data = envelope_commands(accepted, [], [accepted], encoding)
    assert mail == b"MAIL FROM:<" + accepted.encode(encoding) + b">\r\n"
    assert rcpt == b"RCPT TO:<" + accepted.encode(encoding) + b">\r\n"
    # ... and what the next hop reads back is the same mailbox, by the same grammar.
    assert parse_rcpt(rcpt.decode(encoding)[8:-2], utf8=utf8).path.address == accepted


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(address, st.booleans())
@example('"a\\"b"@x.org', False)
@example('"\\ x"@x.org', False)  # aiosmtplib writes a needless quoted pair without it
@example('"\\\\"@x.org', False)
@example('"a b"@x.org', False)
@example('"@"@x.org', False)
@example('"(c)"@x.org', False)
@example("a@[IPv6:::1]", False)
def test_what_ingress_accepts_egress_sends(candidate: str, utf8: bool) -> None:
    arg = f"<{candidate}>" + (" SMTPUTF8" if utf8 else "")
    try:
        command = parse_mail(arg)
    except AddressError:
        return  # refused: nothing for egress to send
    _egress_sends(command.path.address, utf8)
    try:
        rcpt = parse_rcpt(f"<{candidate}>", utf8=utf8)
    except AddressError:
        raise AssertionError(f"MAIL accepted {candidate!r} but RCPT did not") from None
    _egress_sends(rcpt.path.address, utf8)


@settings(max_examples=150, deadline=None)
@given(st.one_of(noise, address.map(lambda a: f"<{a}>"), st.tuples(noise, address, noise).map("".join)))
def test_any_text_is_an_address_or_a_refusal(text: str) -> None:
    try:
        command = parse_mail(text)
    except AddressError as exc:
        assert exc.kind in ("syntax", "utf8", "param")
        return
    if command.path.mailbox is not None:
        _egress_sends(command.path.address, "SMTPUTF8" in command.params)


def test_mailbox_round_trip() -> None:
    assert mailbox('"a b"@x.org').local_text == "a b"
    assert mailbox('"a\\"b"@x.org').local_text == 'a"b'
