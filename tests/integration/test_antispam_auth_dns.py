"""Sender authentication against a real DNS server on loopback (tests/support/dnsserver.py): SPF results,
timeouts, DKIM with keys made here, DMARC reject of a spoofed domain, ARC chains sealed here, the
Authentication-Results header and the answer cache."""

from __future__ import annotations

from collections.abc import Iterator

import dkim
import pytest

from mailmoat_antispam.auth import (
    AuthResolver,
    authenticate,
    authentication_results,
    authserv_id,
    resolver_for,
    strip_spoofed_authres,
)
from mailmoat_antispam.auth.spf import check_spf
from mailmoat_mail.dns import ResolverConfig
from mailmoat_platform.models import Envelope
from mailmoat_policy import Policy
from tests.support.dkimkeys import SigningKey, make_key, txt_zone
from tests.support.dnsserver import DnsServer

pytestmark = pytest.mark.integration

BANK_KEY = make_key()
LIST_KEY = make_key()
FORWARDER_KEY = make_key()

ZONE = """
pass.test. 60 IN TXT "v=spf1 ip4:192.0.2.0/24 -all"
fail.test. 60 IN TXT "v=spf1 -all"
soft.test. 60 IN TXT "v=spf1 ~all"
neutral.test. 60 IN TXT "v=spf1 ?all"
none.test. 60 IN A 192.0.2.1
perm.test. 60 IN TXT "v=spf1 ip4:192.0.2.300 -all"
loop.test. 60 IN TXT "v=spf1 include:loop.test -all"
mx.test. 60 IN TXT "v=spf1 mx include:pass.test a:slow.test -all"
mx.test. 60 IN MX 10 mail.mx.test.
mail.mx.test. 60 IN A 198.51.100.25
mail.mx.test. 60 IN AAAA 2001:db8::25
multi.test. 60 IN TXT "v=spf1 " "ip4:203.0.113.0/24 " "-all"
slowinc.test. 60 IN TXT "v=spf1 include:slow.test -all"
bank.test. 60 IN TXT "v=spf1 ip4:198.51.100.0/24 -all"
_dmarc.bank.test. 60 IN TXT "v=DMARC1; p=reject; sp=quarantine; rua=mailto:dmarc@bank.test"
evil.test. 60 IN TXT "v=spf1 ip4:203.0.113.0/24 -all"
lists.trusted.test. 60 IN TXT "v=spf1 ip4:192.0.2.50 -all"
ours.test. 60 IN TXT "v=spf1 ip4:10.1.0.0/16 -all"
strict.test. 60 IN TXT "v=spf1 ip4:203.0.113.0/24 -all"
_dmarc.strict.test. 60 IN TXT "v=DMARC1; p=reject"
slowdmarc.test. 60 IN TXT "v=spf1 -all"
"""


@pytest.fixture(scope="module")
def dns() -> Iterator[DnsServer]:
    with DnsServer(ZONE, timeout_names={"slow.test", "s9._domainkey.bank.test", "_dmarc.slowdmarc.test"}) as server:
        server.add_zone(txt_zone("s1._domainkey.bank.test", BANK_KEY.record))
        server.add_zone(txt_zone("arc._domainkey.lists.trusted.test", LIST_KEY.record))
        server.add_zone(txt_zone("s1._domainkey.strict.test", BANK_KEY.record))
        server.add_zone(txt_zone("fwd._domainkey.forwarder.test", FORWARDER_KEY.record))
        yield server


def _resolver(dns: DnsServer) -> AuthResolver:
    return AuthResolver(ResolverConfig(("127.0.0.1",), dns.port, 0.5))


POLICY = Policy.model_validate({
    "organization": {"hostname": "mx.ours.test", "internal_networks": ["10.1.0.0/16"]},
    "accepted_domains": [{"domain": "ours.test"}],
    "antispam": {"trusted_arc_sealers": ["trusted.test"]},
})


def _envelope(ip: str, mail_from: str, helo: str = "mail.sender.test", **kw: object) -> Envelope:
    return Envelope(client_ip=ip, mail_from=mail_from, helo=helo, rcpt_to=["user@ours.test"], id="msg-1", **kw)


# --- SPF ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("ip,sender,expected", [
    ("192.0.2.9", "a@pass.test", "pass"),
    ("198.51.100.9", "a@pass.test", "fail"),
    ("192.0.2.9", "a@fail.test", "fail"),
    ("192.0.2.9", "a@soft.test", "softfail"),
    ("192.0.2.9", "a@neutral.test", "neutral"),
    ("192.0.2.9", "a@none.test", "none"),
    ("192.0.2.9", "a@nxdomain.test", "none"),
    ("192.0.2.9", "a@perm.test", "permerror"),
    ("192.0.2.9", "a@loop.test", "permerror"),
    ("198.51.100.25", "a@mx.test", "pass"),
    ("2001:db8::25", "a@mx.test", "pass"),
    ("192.0.2.200", "a@mx.test", "pass"),
    ("203.0.113.7", "a@multi.test", "pass"),
    ("192.0.2.9", "a@slow.test", "temperror"),
    ("192.0.2.9", "a@slowinc.test", "temperror"),
    ("198.18.0.1", "a@mx.test", "temperror"),
])
async def test_spf_results_over_dns(dns: DnsServer, ip: str, sender: str, expected: str) -> None:
    result = await check_spf(_resolver(dns), ip, sender, "mail.sender.test")
    assert result.result == expected, result.reason


async def test_spf_temperror_when_no_name_server_is_reachable() -> None:
    silent = AuthResolver(ResolverConfig(("127.0.0.1",), 9, 0.3))  # discard port: no DNS server there
    result = await check_spf(silent, "192.0.2.9", "a@pass.test", "x.test")
    assert result.result == "temperror"


async def test_spf_as_a_whole_is_bounded_by_spf_timeout(dns: DnsServer) -> None:
    hasty = POLICY.model_copy(update={"antispam": POLICY.antispam.model_copy(update={"spf_timeout": 0.1})})
    result = await authenticate(_envelope("192.0.2.9", "a@slow.test"), BODY, _resolver(dns), hasty)
    assert (result.spf.result, result.spf.domain) == ("temperror", "slow.test")
    assert "longer than 0.1s" in result.spf.reason


# --- DKIM, DMARC, compauth through authenticate() --------------------------------------------------

BODY = (
    b"From: Bank <info@bank.test>\r\n"
    b"To: user@ours.test\r\n"
    b"Subject: Your statement\r\n"
    b"Message-ID: <1@bank.test>\r\n"
    b"\r\n"
    b"Your statement is ready.\r\n"
)


def _signed(message: bytes, key: SigningKey = BANK_KEY, selector: bytes = b"s1", domain: bytes = b"bank.test") -> bytes:
    return dkim.sign(message, selector, domain, key.private_pem) + message


async def test_valid_dkim_and_aligned_spf_pass_dmarc(dns: DnsServer) -> None:
    result = await authenticate(_envelope("198.51.100.7", "bounce@bank.test"), _signed(BODY), _resolver(dns), POLICY)
    assert result.spf.result == "pass"
    assert [(d.result, d.domain) for d in result.dkim] == [("pass", "bank.test")]
    assert (result.dmarc.result, result.dmarc.effective) == ("pass", "none")
    assert (result.compauth.result, result.compauth.reason, result.forged) == ("pass", "100", False)


async def test_dkim_alone_passes_dmarc_when_spf_fails(dns: DnsServer) -> None:
    envelope = _envelope("203.0.113.9", "bounce@evil.test")
    result = await authenticate(envelope, _signed(BODY), _resolver(dns), POLICY)
    assert (result.dmarc.result, result.dmarc.dkim_aligned, result.dmarc.spf_aligned) == ("pass", True, False)


async def test_body_modified_dkim_fails_and_missing_signature_gives_none(dns: DnsServer) -> None:
    broken = _signed(BODY).replace(b"statement is ready", b"statement is READY")
    result = await authenticate(_envelope("198.51.100.7", "bounce@bank.test"), broken, _resolver(dns), POLICY)
    assert [d.result for d in result.dkim] == ["fail"]
    assert result.dmarc.result == "pass"  # SPF still aligned
    result = await authenticate(_envelope("198.51.100.7", "bounce@bank.test"), BODY, _resolver(dns), POLICY)
    assert result.dkim == []
    assert b"dkim=none" in authentication_results("mx.ours.test", result)


async def test_dkim_key_timeout_is_temperror(dns: DnsServer) -> None:
    signed = _signed(BODY, selector=b"s9")
    result = await authenticate(_envelope("198.51.100.7", "bounce@bank.test"), signed, _resolver(dns), POLICY)
    assert [d.result for d in result.dkim] == ["temperror"]


async def test_spoofed_domain_fails_dmarc_with_reject(dns: DnsServer) -> None:
    envelope = _envelope("203.0.113.9", "attacker@evil.test")
    result = await authenticate(envelope, BODY, _resolver(dns), POLICY)
    assert result.spf.result == "pass"  # for evil.test, not aligned with bank.test
    assert (result.dmarc.result, result.dmarc.policy, result.dmarc.effective) == ("fail", "reject", "reject")
    assert (result.compauth.result, result.compauth.reason, result.forged) == ("fail", "000", True)
    assert result.detail()["dmarc"] == {"result": "fail", "policy": "reject", "published": "reject",
                                        "domain": "bank.test", "override": ""}
    header = authentication_results(authserv_id(POLICY), result).decode()
    assert "dmarc=fail (p=reject pct=100 action=reject) header.from=bank.test" in header
    assert header.startswith("Authentication-Results: mx.ours.test;")


async def test_subdomain_of_the_org_domain_gets_sp(dns: DnsServer) -> None:
    message = BODY.replace(b"info@bank.test", b"info@news.bank.test")
    result = await authenticate(_envelope("203.0.113.9", "a@evil.test"), message, _resolver(dns), POLICY)
    assert (result.dmarc.record_domain, result.dmarc.policy) == ("bank.test", "quarantine")


async def test_spoof_of_our_own_domain_from_outside_fails_compauth(dns: DnsServer) -> None:
    message = BODY.replace(b"info@bank.test", b"ceo@ours.test")
    result = await authenticate(_envelope("203.0.113.9", "x@evil.test"), message, _resolver(dns), POLICY)
    assert (result.dmarc.result, result.compauth.result, result.compauth.reason) == ("none", "fail", "601")
    assert result.forged
    inside = await authenticate(_envelope("10.1.2.3", "ceo@ours.test"), message, _resolver(dns), POLICY)
    assert (inside.spf.result, inside.compauth.result, inside.compauth.reason, inside.forged) == (
        "pass", "none", "400", False)
    outbound = await authenticate(_envelope("10.1.2.3", "", direction="outbound"), message, _resolver(dns), POLICY)
    assert (outbound.compauth.result, outbound.compauth.reason) == ("none", "400")


# --- ARC ---------------------------------------------------------------------------------------------

def _through_list(message: bytes, *, dmarc_seen: str = "pass") -> bytes:
    """What a mailing list at lists.trusted.test does: authenticate, change the message, seal it."""
    ar = (f"Authentication-Results: lists.trusted.test; spf=pass smtp.mailfrom=bank.test; "
          f"dkim=pass header.d=bank.test; dmarc={dmarc_seen} header.from=bank.test\r\n").encode()
    changed = ar + message.replace(b"Subject: Your statement", b"Subject: [list] Your statement")
    changed += b"--\r\nlist footer\r\n"
    seal = dkim.arc_sign(changed, b"arc", b"lists.trusted.test", LIST_KEY.private_pem, b"lists.trusted.test")
    assert seal, "the list sealed nothing"
    return b"".join(seal) + changed


async def test_trusted_arc_sealer_overrides_dmarc_failure(dns: DnsServer) -> None:
    message = _through_list(_signed(BODY))
    envelope = _envelope("192.0.2.50", "bounces@lists.trusted.test")
    result = await authenticate(envelope, message, _resolver(dns), POLICY)
    assert [d.result for d in result.dkim] == ["fail"]
    assert (result.arc.result, result.arc.instances, result.arc.sealers) == ("pass", 1, ("lists.trusted.test",))
    assert (result.dmarc.result, result.dmarc.effective, result.dmarc.override) == (
        "fail", "none", "arc:lists.trusted.test")
    assert (result.compauth.result, result.compauth.reason, result.forged) == ("pass", "130", False)
    untrusting = POLICY.model_copy(update={"antispam": POLICY.antispam.model_copy(update={"trusted_arc_sealers": []})})
    result = await authenticate(envelope, message, _resolver(dns), untrusting)
    assert (result.arc.result, result.dmarc.effective, result.compauth.reason) == ("pass", "reject", "000")


async def test_arc_chain_broken_after_sealing_fails_and_gives_no_override(dns: DnsServer) -> None:
    message = _through_list(_signed(BODY)).replace(b"list footer", b"changed later")
    result = await authenticate(_envelope("192.0.2.50", "b@lists.trusted.test"), message, _resolver(dns), POLICY)
    assert result.arc.result == "fail"
    assert (result.dmarc.effective, result.compauth.result) == ("reject", "fail")


async def test_sealer_that_saw_dmarc_fail_gives_no_override(dns: DnsServer) -> None:
    message = _through_list(BODY, dmarc_seen="fail")
    result = await authenticate(_envelope("192.0.2.50", "b@lists.trusted.test"), message, _resolver(dns), POLICY)
    assert result.arc.result == "pass"
    assert (result.dmarc.effective, result.compauth.reason) == ("reject", "000")


async def test_two_hop_chain_newest_sealer_trusted(dns: DnsServer) -> None:
    first = _through_list(_signed(BODY))
    ar = b"Authentication-Results: forwarder.test; arc=pass; dmarc=pass header.from=bank.test\r\n"
    seal = dkim.arc_sign(ar + first, b"fwd", b"forwarder.test", FORWARDER_KEY.private_pem, b"forwarder.test")
    message = b"".join(seal) + ar + first
    envelope = _envelope("192.0.2.60", "b@forwarder.test")
    result = await authenticate(envelope, message, _resolver(dns), POLICY)
    assert (result.arc.result, result.arc.instances) == ("pass", 2)
    assert result.arc.sealers == ("lists.trusted.test", "forwarder.test")
    assert result.dmarc.effective == "reject"  # the newest sealer, forwarder.test, is not trusted
    trusting = POLICY.model_copy(update={"antispam": POLICY.antispam.model_copy(
        update={"trusted_arc_sealers": ["forwarder.test"]})})
    result = await authenticate(envelope, message, _resolver(dns), trusting)
    assert (result.dmarc.override, result.compauth.reason) == ("arc:forwarder.test", "130")


async def test_dmarc_record_timeout_is_temperror_and_applies_no_policy(dns: DnsServer) -> None:
    message = BODY.replace(b"info@bank.test", b"info@slowdmarc.test")
    result = await authenticate(_envelope("203.0.113.9", "x@evil.test"), message, _resolver(dns), POLICY)
    assert (result.dmarc.result, result.dmarc.effective) == ("temperror", "none")
    assert (result.compauth.result, result.compauth.reason, result.forged) == ("none", "451", False)


# --- the header, stripping, the cache -------------------------------------------------------------

async def test_spoofed_results_are_stripped_and_ours_prepended_byte_exact(dns: DnsServer) -> None:
    spoof = b"Authentication-Results: mx.ours.test; dmarc=pass header.from=bank.test\r\n"
    received = spoof + BODY
    resolver = _resolver(dns)
    result = await authenticate(_envelope("203.0.113.9", "attacker@evil.test"), received, resolver, POLICY)
    out = authentication_results(authserv_id(POLICY), result) + strip_spoofed_authres(received, authserv_id(POLICY))
    assert out.endswith(BODY)
    assert out.count(b"Authentication-Results:") == 1
    assert b"dmarc=fail" in out and b"dmarc=pass" not in out


async def test_answers_are_cached_and_concurrent_queries_shared(dns: DnsServer) -> None:
    resolver = _resolver(dns)
    envelope = _envelope("198.51.100.7", "bounce@bank.test")
    message = _signed(BODY)
    await authenticate(envelope, message, resolver, POLICY)
    asked = resolver.queries
    before = len(dns.queries)
    again = await authenticate(envelope, message, resolver, POLICY)
    assert again.dmarc.result == "pass"
    assert resolver.queries == asked and len(dns.queries) == before


async def test_resolver_for_uses_the_policy_dns_section(dns: DnsServer) -> None:
    policy = POLICY.model_copy(update={"dns": POLICY.dns.model_copy(
        update={"nameservers": ["127.0.0.1"], "port": dns.port, "timeout": 0.5})})
    resolver = resolver_for(policy)
    result = await authenticate(_envelope("198.51.100.7", "bounce@bank.test"), _signed(BODY), resolver, policy)
    assert (result.spf.result, result.dmarc.result) == ("pass", "pass")
