"""Sender authentication corner cases (issue 14): Ed25519 ARC seals, a DMARC record whose ``p=`` is
missing or invalid but whose ``rua`` is valid, the HELO identity, and every author domain judged."""

from __future__ import annotations

import asyncio
import base64
from unittest import mock

import dkim
import nacl.encoding
import nacl.signing
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailmoat_antispam.auth import authenticate, authentication_results
from mailmoat_antispam.auth.dkimverify import verify_arc
from mailmoat_antispam.auth.dmarc import aligned, parse_record
from mailmoat_mail.author import read_author
from mailmoat_platform.models import Envelope
from mailmoat_policy import Policy
from tests.support.dkimkeys import make_key
from tests.support.spfsuite import TableResolver

MESSAGE = (b"Authentication-Results: lists.test; spf=pass smtp.mailfrom=bank.test; dmarc=pass header.from=bank.test\r\n"
           b"From: <ceo@bank.test>\r\nTo: a@example.com\r\nSubject: hi\r\n\r\nThe quarterly figures.\r\n")


def ed25519_seal(message: bytes, domain: bytes, selector: bytes) -> tuple[bytes, str]:
    """(an ARC set sealed with a new Ed25519 key, that key's DNS record). dkimpy signs ARC with RSA only,
    so its ARC signer is handed the Ed25519 key directly (its header code signs Ed25519 as for DKIM)."""
    key = nacl.signing.SigningKey.generate()
    private = base64.b64encode(bytes(key))
    record = "v=DKIM1; k=ed25519; p=" + base64.b64encode(bytes(key.verify_key)).decode()

    def load(text: bytes) -> nacl.signing.SigningKey:
        return nacl.signing.SigningKey(text, encoder=nacl.encoding.Base64Encoder)

    with mock.patch.object(dkim, "parse_pem_private_key", load):
        arc = dkim.ARC(message, signature_algorithm=b"ed25519-sha256")
        headers = arc.sign(selector, domain, private, domain, include_headers=[b"from", b"to", b"subject"])
    assert headers and b"a=ed25519-sha256" in headers[0]
    return b"".join(headers), record


async def test_an_ed25519_arc_seal_verifies() -> None:
    seal, record = ed25519_seal(MESSAGE, b"lists.test", b"ed")
    resolver = TableResolver({"ed._domainkey.lists.test": [("TXT", [record])]})
    result = await verify_arc(seal + MESSAGE, resolver)
    assert (result.result, result.sealers) == ("pass", ("lists.test",)), result.reason
    assert "dmarc=pass" in result.newest_results
    changed = (seal + MESSAGE).replace(b"quarterly", b"monthly")
    assert (await verify_arc(changed, resolver)).result == "fail"


async def test_an_ed25519_seal_is_refused_with_a_key_of_another_type() -> None:
    seal, _ = ed25519_seal(MESSAGE, b"lists.test", b"ed")
    rsa = make_key(1024)
    resolver = TableResolver({"ed._domainkey.lists.test": [("TXT", [rsa.record])]})
    assert (await verify_arc(seal + MESSAGE, resolver)).result == "fail"


async def test_rsa_arc_seals_still_verify() -> None:
    key = make_key(1024)
    seal = b"".join(dkim.arc_sign(MESSAGE, b"rs", b"lists.test", key.private_pem, b"lists.test"))
    resolver = TableResolver({"rs._domainkey.lists.test": [("TXT", [key.record])]})
    assert (await verify_arc(seal + MESSAGE, resolver)).result == "pass"


@pytest.mark.parametrize(("text", "p", "sp"), [
    ("v=DMARC1; rua=mailto:reports@bank.test", "none", "none"),
    ("v=DMARC1; p=bogus; rua=mailto:reports@bank.test", "none", "none"),
    ("v=DMARC1; p=reject; sp=bogus; rua=mailto:a@bank.test,mailto:b@bank.test!10m", "none", "none"),
    ("v=DMARC1; p=quarantine; sp=bogus", "quarantine", "quarantine"),
])
def test_a_record_without_a_valid_p_but_with_a_valid_rua_is_p_none(text: str, p: str, sp: str) -> None:
    record = parse_record("bank.test", text)
    assert (record.p, record.sp) == (p, sp)


@pytest.mark.parametrize("text", ["v=DMARC1", "v=DMARC1; p=bogus", "v=DMARC1; p=bogus; rua=not a uri",
                                  "v=DMARC1; rua="])
def test_a_record_without_a_valid_p_or_rua_is_not_usable(text: str) -> None:
    with pytest.raises(ValueError):
        parse_record("bank.test", text)


# --- every author domain, the HELO identity ------------------------------------------------------------

POLICY = Policy.model_validate({"organization": {"hostname": "mx.ours.test", "internal_networks": ["10.1.0.0/16"]},
                                "accepted_domains": [{"domain": "ours.test"}]})
ZONE = {
    "bank.test": [("TXT", ["v=spf1 ip4:198.51.100.0/24 -all"])],
    "_dmarc.bank.test": [("TXT", ["v=DMARC1; p=reject"])],
    "evil.test": [("TXT", ["v=spf1 ip4:203.0.113.0/24 -all"])],
    "mail.evil.test": [("TXT", ["v=spf1 a -all"]), ("A", "203.0.113.5")],
    "quiet.test": [("TXT", ["v=spf1 ip4:203.0.113.0/24 -all"])],
}


def _envelope(helo: str = "mail.evil.test") -> Envelope:
    return Envelope(client_ip="203.0.113.5", mail_from="x@evil.test", helo=helo, rcpt_to=["a@ours.test"], id="m1",
                    direction="inbound")


def _message(*froms: bytes) -> bytes:
    return b"".join(b"From: " + f + b"\r\n" for f in froms) + b"Subject: s\r\n\r\nbody\r\n"


@pytest.mark.parametrize("froms", [
    (b"<ceo@bank.test>",),
    (b"<ceo@bank.test>, <x@evil.test>",),
    (b"<x@evil.test>, <ceo@bank.test>",),
    (b"<x@evil.test>", b"<ceo@bank.test>"),
    (b"ceo@bank.test <x@evil.test>",),
    (b"x@evil.test)<ceo@bank.test>",),
    (b'"x@evil.test" <ceo@bank.test>',),
])
async def test_the_strictest_author_domain_decides(froms: tuple[bytes, ...]) -> None:
    result = await authenticate(_envelope(), _message(*froms), TableResolver(ZONE), POLICY)
    assert (result.dmarc.result, result.dmarc.domain, result.dmarc.effective) == ("fail", "bank.test", "reject")
    assert result.compauth.result == "fail" and result.forged
    text = authentication_results("mx.ours.test", result).decode()
    assert "dmarc=fail (p=reject pct=100 action=reject) header.from=bank.test" in text
    if len(result.author.domains) > 1:
        assert "header.from=evil.test" in text and result.detail()["author"]["problem"]


async def test_several_authors_without_a_policy_are_still_spoof_unless_each_authenticates() -> None:
    both = await authenticate(_envelope(), _message(b"<x@evil.test>, <y@sub.evil.test>"), TableResolver(ZONE), POLICY)
    assert (both.compauth.result, both.compauth.reason) == ("pass", "100")  # SPF relaxed-aligned with each
    mixed = await authenticate(_envelope(), _message(b"<x@evil.test>, <y@quiet.test>"), TableResolver(ZONE), POLICY)
    assert (mixed.compauth.result, mixed.compauth.reason) == ("fail", "020")
    one = await authenticate(_envelope(), _message(b"<y@nowhere.test>"), TableResolver(ZONE), POLICY)
    assert one.compauth.result == "none"


async def test_the_helo_identity_is_checked_and_reported() -> None:
    result = await authenticate(_envelope(), _message(b"<x@evil.test>"), TableResolver(ZONE), POLICY)
    assert result.spf.identity == "mailfrom" and result.spf_helo is not None
    assert (result.spf_helo.result, result.spf_helo.domain) == ("pass", "mail.evil.test")
    text = authentication_results("mx.ours.test", result).decode()
    assert "smtp.mailfrom=evil.test;" in text and "smtp.helo=mail.evil.test;" in text
    assert result.detail()["spf_helo"] == {"result": "pass", "domain": "mail.evil.test"}
    literal = await authenticate(_envelope("[203.0.113.5]"), _message(b"<x@evil.test>"), TableResolver(ZONE), POLICY)
    assert literal.spf_helo is None and "smtp.helo" not in authentication_results("a.test", literal).decode()


@given(st.sampled_from(["ceo", "a.b", "x+y"]), st.sampled_from(["bank.test", "mail.bank.test", "quiet.test"]),
       st.sampled_from(["", "Ceo", "evil.test", "x@evil.test", "=?utf-8?q?x=40evil=2Etest?="]),
       st.sampled_from(["{a}", "<{a}>", "{n} <{a}>", '"{n}" <{a}>', "{a} ({n})", "G: {n} <{a}>;"]))
@settings(max_examples=60, deadline=None)
def test_dmarc_judges_the_domain_a_client_displays(local: str, domain: str, name: str, shape: str) -> None:
    """Whatever the display name says, DMARC judges the address a client shows (from the same parser)."""
    if "{n}" in shape and not name:
        return
    value = shape.format(a=f"{local}@{domain}", n=name)
    result = asyncio.run(authenticate(_envelope(), _message(value.encode()), TableResolver(ZONE), POLICY))
    shown = read_author(_message(value.encode()))
    if shown.problem is not None:  # an address-like name outside quotes: not RFC 5322, every shown domain judged
        assert "@" in name and shape in ("{n} <{a}>", "G: {n} <{a}>;"), value
        assert domain in [d.domain for d in result.dmarc_all] and len(result.dmarc_all) == len(shown.domains)
        return
    assert [d.domain for d in result.dmarc_all] == [shown.single.dns_domain] == [domain], value


def test_alignment_compares_internationalised_names_as_a_labels() -> None:
    assert aligned("bänk.test", "xn--bnk-qla.test", "s") and aligned("mail.BÄNK.test", "xn--bnk-qla.test", "r")
    assert not aligned("bank.test", "xn--bnk-qla.test", "r")


def _header_end_line_by_line(data: bytes) -> int:
    position = 0
    while position < len(data):
        newline = data.find(b"\n", position)
        line_end = len(data) if newline < 0 else newline + 1
        if data[position:line_end] in (b"\r\n", b"\n"):
            return line_end
        position = line_end
    return len(data)


def test_the_header_block_ends_at_its_first_empty_line_whatever_the_line_ends() -> None:
    import random

    from mailmoat_antispam.auth.headers import header_end

    rng = random.Random(4)
    pieces = [b"\r\n", b"\n", b"\r", b"a", b": ", b" ", b"\t", b"X-H: v"]
    cases = [b"", b"\r\n", b"\n", b"A: b\r\n\r\nbody\n\nmore", b"A: b\n\nbody\r\n\r\n", b"A: b\r\n \r\n\r\nx"]
    cases += [b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 14))) for _ in range(20000)]
    for data in cases:
        assert header_end(data) == _header_end_line_by_line(data), data


def test_a_field_name_missing_from_the_header_bytes_means_no_such_field() -> None:
    """``may_hold`` False is only ever said of a message without such a field (any case, folded, 8-bit)."""
    import random

    from mailmoat_antispam.auth.headers import fields, may_hold

    rng = random.Random(6)
    pieces = [b"DKIM-Signature", b"dkim-signaturE", b"ARC-Seal", b"arc-", b"Authentication-Results",
              b"AUTHENTICATION-RESULTS ", b"X", b": v", b":", b"\r\n", b"\r\n ", b"\n", b"\xc3\xa9", b" "]
    names = {b"dkim-signature": "dkim-signature", b"arc-": "arc-", b"authentication-results": "authentication-results"}
    for _ in range(20000):
        data = b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 12))) + b"\r\n\r\nDKIM-Signature: body"
        found = [f.name.lower() for f in fields(data)]
        for raw, name in names.items():
            if not may_hold(data, raw):
                assert not any(n.startswith(name) for n in found), data
