"""The attacks of "Composition Kills" (USENIX Security 2020, espoofer; tests/data/espoofer) that the end-to-end
run (tests/e2e/test_espoofer.py) found getting further than they should, each pinned at the code that stops it."""

from __future__ import annotations

import dkim
import pytest

from mailmoat_antispam.auth import authenticate, authentication_results
from mailmoat_antispam.auth.dkimverify import verify_dkim
from mailmoat_ingress.author import NOT_COMPLIANT, check_author
from mailmoat_mail.author import read_author
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


# --- A9, A11-A13: From fields that programs read differently ---------------------------------------------

TAIL = b"To: <victim@victim.test>\r\nSubject: s\r\n\r\n" + BODY
AMBIGUOUS = {
    # espoofer's A11, and the same the other way round: a reader that unfolds first shows the folded field
    "a11": b"From\r\n : <first@attack.test>\r\nFrom: <admin@legitimate.test>\r\n",
    "a11-reversed": b"From\r\n : <admin@legitimate.test>\r\nFrom: <first@attack.test>\r\n",
    "a11-tab": b"From\r\n\t: <admin@legitimate.test>\r\nFrom: <first@attack.test>\r\n",
    # A9, and reversed: a reader that takes the first line for a field shows the space-led From
    "a9": b" From: <first@attack.test>\r\nFrom: <admin@legitimate.test>\r\n",
    "a9-reversed": b" From: <admin@legitimate.test>\r\nFrom: <first@attack.test>\r\n",
    # A12: a reader that ignores the folded From falls back to the Sender
    "a12": b"From\r\n : <first@attack.test>\r\nSender: <admin@legitimate.test>\r\n",
}


@pytest.mark.parametrize("name", sorted(AMBIGUOUS))
def test_a_from_field_programs_read_differently_counts_and_is_judged(name: str) -> None:
    author = read_author(AMBIGUOUS[name] + TAIL)
    assert author.ambiguous and author.problem and author.problem.startswith("ambiguous From field")
    assert author.single is None
    assert "attack.test" in author.domains
    assert ("legitimate.test" in author.domains) == (name != "a12")


@pytest.mark.parametrize("mode", ["reject", "evaluate"])
@pytest.mark.parametrize("name", sorted(AMBIGUOUS))
def test_a_from_field_programs_read_differently_is_refused_at_data_in_either_mode(name: str, mode: str) -> None:
    policy = Policy.model_validate({"organization": {"hostname": "gw.test"}, "accepted_domains": [{"domain": "v.test"}],
                                    "pipeline": {"filters": ["antispam"]}, "antispam": {"author_check": mode}})
    assert check_author(AMBIGUOUS[name] + TAIL, policy, "203.0.113.5") == f"{NOT_COMPLIANT} (ambiguous From field)"


@pytest.mark.parametrize("head", [b"From: <a@attack.test>\r\n (A)\r\n", b"Subject: s\r\n From: <a@attack.test>\r\n",
                                  b"From:\r\n <a@attack.test>\r\n", b"From : <a@attack.test>\r\n"])
def test_folding_after_the_colon_and_continuation_lines_stay_as_they_were(head: bytes) -> None:
    author = read_author(head + TAIL)
    assert not author.ambiguous
    assert author.fields == (0 if head.startswith(b"Subject") else 1)


async def test_the_reversed_a11_no_longer_passes_as_the_attackers_own_mail() -> None:
    """What the gateway judged before: attack.test alone (SPF aligned, compauth pass), while a client that
    unfolds first shows admin@legitimate.test. Now both domains are judged, legitimate.test's p=reject decides."""
    envelope = Envelope(client_ip="203.0.113.5", mail_from="any@attack.test", helo="attack.test",
                        rcpt_to=["victim@victim.test"], id="a11r", direction="inbound")
    result = await authenticate(envelope, AMBIGUOUS["a11-reversed"] + TAIL, _zone(), POLICY)
    assert (result.dmarc.result, result.dmarc.domain, result.dmarc.effective) == ("fail", "legitimate.test", "reject")
    assert result.compauth.result == "fail" and result.forged
