"""Sender authentication corner cases (issue 14): Ed25519 ARC seals, a DMARC record whose ``p=`` is
missing or invalid but whose ``rua`` is valid, the HELO identity, and every author domain judged."""

from __future__ import annotations

import base64
from unittest import mock

import dkim
import nacl.encoding
import nacl.signing
import pytest

from mailmoat_antispam.auth.dkimverify import verify_arc
from mailmoat_antispam.auth.dmarc import parse_record
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
