"""The attacks of "Composition Kills" (USENIX Security 2020, espoofer; tests/data/espoofer) that the end-to-end
run (tests/e2e/test_espoofer.py) found getting further than they should, each pinned at the code that stops it."""

from __future__ import annotations

import dkim
import pytest

from mailmoat_antispam.auth import authenticate, authentication_results
from mailmoat_antispam.auth.dkimverify import verify_dkim
from mailmoat_platform.models import Envelope
from mailmoat_policy import Policy
from tests.support.dkimkeys import make_key
from tests.support.spfsuite import TableResolver

KEY = make_key(1024)
BODY = b"Hi, this is a test message! Best wishes.\r\n"
FROM = b"From: <admin@legitimate.test>"
POLICY = Policy.model_validate({"organization": {"hostname": "mx.victim.test"},
                                "accepted_domains": [{"domain": "victim.test"}]})


def _signed(selector: bytes, domain: bytes) -> bytes:
    """espoofer's way: the attacker signs From and the body with its own key under odd ``s=``/``d=``."""
    message = FROM + b"\r\nTo: <victim@victim.test>\r\nSubject: s\r\n\r\n" + BODY
    signature = dkim.sign(FROM + b"\r\n\r\n" + BODY, selector, domain, KEY.private_pem,
                          canonicalize=(b"simple", b"relaxed"), include_headers=[b"from"])
    return signature + message


def _zone(*names: str) -> TableResolver:
    """The attacker's DNS: its key at every name given, SPF for attack.test, DMARC p=reject for legitimate.test."""
    zone: dict[str, list] = {name.lower(): [("TXT", [KEY.record])] for name in names}
    zone["attack.test"] = [("TXT", ["v=spf1 ip4:203.0.113.0/24 -all"])]
    zone["legitimate.test"] = [("TXT", ["v=spf1 -all"])]
    zone["_dmarc.legitimate.test"] = [("TXT", ["v=DMARC1; p=reject"])]
    return TableResolver(zone)


@pytest.mark.parametrize("selector,domain,key_at", [
    # A4: the key sits under attack.test, and a reader that takes ' for a quote sees d=legitimate.test
    (b"selector", b"legitimate.test'a.attack.test", "selector._domainkey.legitimate.test'a.attack.test"),
    (b"selector", b"legitimate.test(a.attack.test", "selector._domainkey.legitimate.test(a.attack.test"),
    (b"selector", b'legitimate.test"a.attack.test', 'selector._domainkey.legitimate.test"a.attack.test'),
    # A3: a C resolver stops at the NUL and asks for the attacker's selector._domainkey.attack.test
    (b"selector._domainkey.attack.test.\x00.any", b"legitimate.test",
     "selector._domainkey.attack.test.\x00.any._domainkey.legitimate.test"),
    (b"sel ector", b"legitimate.test", "sel ector._domainkey.legitimate.test"),
])
async def test_a_signature_whose_d_or_s_is_not_a_dns_name_is_a_permerror_and_never_looked_up(
        selector: bytes, domain: bytes, key_at: str) -> None:
    resolver = _zone(key_at)
    (result,) = await verify_dkim(_signed(selector, domain), resolver)
    assert result.result == "permerror", result.reason
    assert "is not a" in result.reason
    assert resolver.queries == []


async def test_the_same_signature_under_a_proper_name_still_passes() -> None:
    resolver = _zone("selector._domainkey.a.attack.test")
    (result,) = await verify_dkim(_signed(b"selector", b"a.attack.test"), resolver)
    assert (result.result, result.domain) == ("pass", "a.attack.test"), result.reason


async def test_authentication_results_quote_a_signing_domain_that_is_not_a_host_name() -> None:
    """A4 end to end through authenticate(): DKIM is no pass, DMARC fails for legitimate.test, and the header
    names the odd d= as one quoted-string, so no reader splits legitimate.test off it."""
    envelope = Envelope(client_ip="203.0.113.5", mail_from="any@attack.test", helo="attack.test",
                        rcpt_to=["victim@victim.test"], id="a4", direction="inbound")
    message = _signed(b"selector", b"legitimate.test'a.attack.test")
    result = await authenticate(envelope, message, _zone("selector._domainkey.legitimate.test'a.attack.test"), POLICY)
    assert [d.result for d in result.dkim] == ["permerror"]
    assert (result.dmarc.result, result.dmarc.domain, result.dmarc.effective) == ("fail", "legitimate.test", "reject")
    header = authentication_results("mx.victim.test", result).decode()
    assert "header.d=\"legitimate.test'a.attack.test\"" in header
    assert "header.d=legitimate.test" not in header
