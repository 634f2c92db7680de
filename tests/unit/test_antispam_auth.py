"""Sender authentication, pure parts: header stripping and rendering, DMARC records, alignment and pct,
composite authentication, the trusted-ARC override, DKIM against the RFC 8463/6376 example, the answer cache."""

from __future__ import annotations

import re
from pathlib import Path

import dkim
import pytest

from mailmoat_antispam.auth import (
    ArcResult,
    AuthResult,
    CompAuth,
    DkimResult,
    DmarcResult,
    SpfResult,
    arc_override,
    authentication_results,
    strip_spoofed_authres,
)
from mailmoat_antispam.auth.compauth import composite
from mailmoat_antispam.auth.dkimverify import verify_dkim
from mailmoat_antispam.auth.dmarc import Discovery, aligned, evaluate, organizational_domain, parse_record
from mailmoat_antispam.auth.headers import from_domains
from mailmoat_antispam.auth.resolver import AnswerCache, DnsAnswer
from mailmoat_antispam.auth.spf import check_spf
from tests.support.dkimkeys import make_key
from tests.support.spfsuite import TableResolver

DATA = Path(__file__).resolve().parent.parent / "data" / "dkim"

# --- Authentication-Results stripping -------------------------------------------------------------

SPOOFED = (
    b"Received: from a by b; Sun, 29 Nov 2026 04:00:00 +0000\r\n"
    b"Authentication-Results: mx.ours.test; spf=pass smtp.mailfrom=bank.test;\r\n"
    b"\tdkim=pass header.d=bank.test\r\n"
    b"Authentication-Results: (comment) MX.Ours.Test.; dmarc=pass\r\n"
    b"Authentication-Results: \"mx.ours.test\"; arc=pass\r\n"
    b"Authentication-Results: mx.elsewhere.test; spf=fail\r\n"
    b"authentication-results:mx.ours.test;dkim=pass\r\n"
    b"Subject: Authentication-Results: mx.ours.test; in a subject\r\n"
    b"\r\n"
    b"Authentication-Results: mx.ours.test; this is the body\r\n"
)


def test_spoofed_authentication_results_are_removed_and_everything_else_is_byte_exact() -> None:
    out = strip_spoofed_authres(SPOOFED, "mx.ours.test")
    assert out == (
        b"Received: from a by b; Sun, 29 Nov 2026 04:00:00 +0000\r\n"
        b"Authentication-Results: mx.elsewhere.test; spf=fail\r\n"
        b"Subject: Authentication-Results: mx.ours.test; in a subject\r\n"
        b"\r\n"
        b"Authentication-Results: mx.ours.test; this is the body\r\n"
    )


def test_stripping_without_a_match_returns_the_same_bytes() -> None:
    message = b"From: a@b.test\nAuthentication-Results: other.test; spf=pass\n\nbody\n"
    assert strip_spoofed_authres(message, "mx.ours.test") is message
    assert strip_spoofed_authres(message, "other.test") == b"From: a@b.test\n\nbody\n"


def test_from_domains() -> None:
    assert from_domains(b"From: \"Bank\" <Info@Bank.TEST>\r\nTo: x@y.test\r\n\r\n") == ["bank.test"]
    assert from_domains(b"From: a@one.test,\r\n b@two.test\r\n\r\n") == ["one.test", "two.test"]
    assert from_domains(b"Subject: none\r\n\r\nFrom: a@body.test\r\n") == []


# --- Authentication-Results rendering ---------------------------------------------------------------

def _result(**changes: object) -> AuthResult:
    result = AuthResult(
        spf=SpfResult("pass", "bank.test", "mailfrom", "bank.test: matched ip4:192.0.2.0/24"),
        dkim=[DkimResult("pass", "bank.test", "s1", "", "ab+/cd=E", "signature verified")],
        dmarc=DmarcResult("pass", "bank.test", "bank.test", "bank.test", "reject", "none", spf_aligned=True),
        arc=ArcResult(),
        compauth=CompAuth("pass", "100"),
    )
    for key, value in changes.items():
        setattr(result, key, value)
    return result


def test_authentication_results_header_is_one_folded_crlf_field() -> None:
    header = authentication_results("mx.ours.test", _result())
    assert header.endswith(b"\r\n") and header.count(b"\r\n") == 6
    assert b"\n" not in header.replace(b"\r\n", b"")
    text = header.decode()
    assert text.startswith("Authentication-Results: mx.ours.test;\r\n spf=pass ")
    assert "smtp.mailfrom=bank.test;" in text
    assert 'dkim=pass (signature verified) header.d=bank.test header.s=s1 header.b="ab+/cd=E";' in text
    assert "dmarc=pass (p=reject pct=100 action=none) header.from=bank.test;" in text
    assert text.rstrip().endswith("arc=none;\r\n compauth=pass reason=100")
    unfolded = re.sub(r"\r\n[ \t]", " ", text)
    assert len(unfolded.splitlines()) == 1


def test_authentication_results_helo_identity_unsigned_message_and_comment_escaping() -> None:
    result = _result(spf=SpfResult("none", "mail.x.test", "helo", "mail.x.test: no SPF record (see (x))"), dkim=[])
    text = authentication_results("mx.ours.test", result).decode()
    assert "spf=none (mail.x.test: no SPF record \\(see \\(x\\)\\)) smtp.helo=mail.x.test;" in text
    assert "dkim=none (message not signed);" in text


def test_our_own_header_is_stripped_by_our_own_id() -> None:
    header = authentication_results("mx.ours.test", _result())
    message = b"From: a@bank.test\r\n\r\nbody\r\n"
    assert strip_spoofed_authres(header + message, "mx.ours.test") == message


# --- DMARC -----------------------------------------------------------------------------------------

def test_dmarc_record_parsing() -> None:
    record = parse_record("bank.test", "v=DMARC1; p=reject; sp=quarantine; adkim=s; aspf=r; pct=25; rua=mailto:x@y")
    assert (record.p, record.sp, record.adkim, record.aspf, record.pct) == ("reject", "quarantine", "s", "r", 25)
    assert parse_record("bank.test", "v=DMARC1; p=none").sp == "none"
    for bad in ("v=DMARC1", "v=DMARC1; p=block", "p=reject; v=DMARC1", "v=DMARC2; p=reject"):
        with pytest.raises(ValueError):
            parse_record("bank.test", bad)


def test_organizational_domain_from_the_bundled_public_suffix_list() -> None:
    assert organizational_domain("mail.news.example.co.uk") == "example.co.uk"
    assert organizational_domain("a.b.bank.test") == "bank.test"
    assert organizational_domain("co.uk") == "co.uk"


def test_alignment_relaxed_and_strict() -> None:
    assert aligned("bounces.bank.test", "bank.test", "r")
    assert not aligned("bounces.bank.test", "bank.test", "s")
    assert aligned("Bank.Test.", "bank.test", "s")
    assert not aligned("bank.test.evil.test", "bank.test", "r")
    assert not aligned("example.co.uk", "other.co.uk", "r")


SPF_PASS = SpfResult("pass", "bounces.bank.test")
SPF_FAIL = SpfResult("fail", "bank.test")


def _found(text: str, domain: str = "bank.test") -> Discovery:
    return Discovery("found", parse_record(domain, text))


def test_dmarc_pass_by_relaxed_spf_and_fail_by_strict() -> None:
    assert evaluate("bank.test", _found("v=DMARC1; p=reject"), SPF_PASS, [], "id1").result == "pass"
    strict = evaluate("bank.test", _found("v=DMARC1; p=reject; aspf=s"), SPF_PASS, [], "id1")
    assert (strict.result, strict.policy, strict.effective) == ("fail", "reject", "reject")


def test_dmarc_pass_by_aligned_dkim_only() -> None:
    dkims = [DkimResult("fail", "bank.test"), DkimResult("pass", "other.test"), DkimResult("pass", "mail.bank.test")]
    result = evaluate("bank.test", _found("v=DMARC1; p=reject"), SPF_FAIL, dkims, "id1")
    assert (result.result, result.dkim_aligned, result.spf_aligned) == ("pass", True, False)
    result = evaluate("bank.test", _found("v=DMARC1; p=reject"), SPF_FAIL, dkims[:2], "id1")
    assert result.result == "fail"


def test_subdomain_policy_applies_under_the_organisational_record() -> None:
    record = _found("v=DMARC1; p=reject; sp=quarantine")
    assert evaluate("shop.bank.test", record, SPF_FAIL, [], "id").policy == "quarantine"
    assert evaluate("bank.test", record, SPF_FAIL, [], "id").policy == "reject"


def test_pct_sampling_is_deterministic_per_message_and_lowers_the_policy_one_step() -> None:
    record = _found("v=DMARC1; p=reject; pct=50")
    outcomes = {key: evaluate("bank.test", record, SPF_FAIL, [], key).effective for key in map(str, range(200))}
    assert set(outcomes.values()) == {"reject", "quarantine"}
    assert 60 < list(outcomes.values()).count("reject") < 140
    for key, effective in outcomes.items():
        again = evaluate("bank.test", record, SPF_FAIL, [], key)
        assert again.effective == effective and again.sampled_out == (effective == "quarantine")
    assert evaluate("bank.test", _found("v=DMARC1; p=quarantine; pct=0"), SPF_FAIL, [], "x").effective == "none"
    assert evaluate("bank.test", _found("v=DMARC1; p=reject; pct=100"), SPF_FAIL, [], "x").effective == "reject"


def test_no_record_and_errors() -> None:
    none = evaluate("bank.test", Discovery("none", reason="no record"), SPF_PASS, [], "x")
    assert (none.result, none.effective, none.spf_aligned) == ("none", "none", True)
    assert evaluate("bank.test", Discovery("temperror"), SPF_FAIL, [], "x").result == "temperror"
    assert evaluate("bank.test", Discovery("permerror"), SPF_FAIL, [], "x").effective == "none"


# --- trusted ARC sealers and compauth --------------------------------------------------------------

FAILED = DmarcResult("fail", "bank.test", "bank.test", "bank.test", "reject", "reject")
CHAIN = ArcResult("pass", "success", 2, ("lists.trusted.test", "relay.trusted.test"),
                  "relay.trusted.test; dkim=pass header.d=bank.test; dmarc=pass header.from=bank.test")


def test_trusted_arc_sealer_overrides_a_dmarc_failure() -> None:
    overridden = arc_override(FAILED, CHAIN, ["trusted.test"])
    assert (overridden.result, overridden.effective, overridden.override) == ("fail", "none", "arc:relay.trusted.test")
    for results in ("relay.trusted.test; spf=fail; DMARC=Pass (p=reject) Header.From=Bank.Test.;",
                    "relay.trusted.test; dmarc=pass header.from=other.test; dmarc=pass header.from=bank.test"):
        chain = ArcResult("pass", "", 2, CHAIN.sealers, results)
        assert arc_override(FAILED, chain, ["trusted.test"]).override == "arc:relay.trusted.test", results


@pytest.mark.parametrize("arc,trusted", [
    (CHAIN, []),
    (CHAIN, ["other.test"]),
    (ArcResult("fail", "bad seal", 2, CHAIN.sealers, CHAIN.newest_results), ["trusted.test"]),
    (ArcResult("pass", "", 2, CHAIN.sealers, "relay.trusted.test; dmarc=fail"), ["trusted.test"]),
    (ArcResult("pass", "", 2, ("relay.trusted.test", "evil.test"), CHAIN.newest_results), ["trusted.test"]),
    # a pass the trusted sealer recorded for another author domain, or for none named
    (ArcResult("pass", "", 2, CHAIN.sealers, "relay.trusted.test; dmarc=pass header.from=evil.test"), ["trusted.test"]),
    (ArcResult("pass", "", 2, CHAIN.sealers, "relay.trusted.test; dmarc=pass"), ["trusted.test"]),
    (ArcResult("pass", "", 2, CHAIN.sealers, "relay.trusted.test; dmarc=pass header.from=bank.test.evil.test"),
     ["trusted.test"]),
    (ArcResult("pass", "", 2, CHAIN.sealers, "relay.trusted.test; dmarc=fail header.from=bank.test; "
               "x=dmarc=pass header.from=evil.test"), ["trusted.test"]),
])
def test_no_override_without_a_valid_chain_newest_sealed_by_a_trusted_domain_reporting_dmarc_pass(
        arc: ArcResult, trusted: list[str]) -> None:
    assert arc_override(FAILED, arc, trusted) == FAILED


def _comp(dmarc: DmarcResult, *, own: bool = False, outside: bool = True, spf: SpfResult = SPF_FAIL,
          dkim: list[DkimResult] | None = None) -> tuple[str, str]:
    result = composite(outside=outside, own_domain=own, spf=spf, dkim=dkim or [], dmarc=dmarc)
    return result.result, result.reason


def test_compauth() -> None:
    assert _comp(FAILED) == ("fail", "000")
    assert _comp(FAILED, own=True) == ("fail", "010")
    assert _comp(arc_override(FAILED, CHAIN, ["trusted.test"])) == ("pass", "130")
    assert _comp(DmarcResult("pass", "bank.test", policy="reject", spf_aligned=True)) == ("pass", "100")
    no_record = DmarcResult("none", "ours.test")
    assert _comp(no_record, own=True) == ("fail", "601")
    assert _comp(DmarcResult("none", "ours.test", dkim_aligned=True), own=True) == ("pass", "100")
    assert _comp(DmarcResult("fail", "x.test", policy="none")) == ("softfail", "001")
    assert _comp(no_record, spf=SpfResult("neutral", "x.test")) == ("none", "300")
    assert _comp(DmarcResult("temperror", "x.test")) == ("none", "451")
    assert _comp(FAILED, outside=False) == ("none", "400")
    assert _comp(DmarcResult("none")) == ("none", "300")


# --- DKIM with injected answers ----------------------------------------------------------------------

def _zone(name: str, record: str) -> dict[str, list[object]]:
    return {name: [("TXT", [record])]}


async def test_dkim_rfc8463_example_rsa_signature_verifies() -> None:
    message = (DATA / "rfc6376.signed.rsa.msg").read_bytes()
    key = (DATA / "test.txt").read_text().strip()
    resolver = TableResolver(_zone("test._domainkey.football.example.com", key))
    [result] = await verify_dkim(message, resolver)
    assert (result.result, result.domain, result.selector) == ("pass", "football.example.com", "test")
    tampered = message.replace(b"We lost the game.", b"We won the game.")
    [result] = await verify_dkim(tampered, resolver)
    assert result.result == "fail"


BRISBANE = "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="  # RFC 8463 A.2


async def test_dkim_rfc8463_example_ed25519_and_rsa_signatures_both_verify() -> None:
    message = (DATA / "rfc6376.signed.msg").read_bytes()
    resolver = TableResolver({
        "brisbane._domainkey.football.example.com": [("TXT", [BRISBANE])],
        "test._domainkey.football.example.com": [("TXT", [(DATA / "test.txt").read_text().strip()])],
    })
    results = await verify_dkim(message, resolver)
    assert [(r.result, r.selector) for r in results] == [("pass", "brisbane"), ("pass", "test")]
    results = await verify_dkim(message.replace(b"Subject: Is dinner ready?", b"Subject: Is lunch ready?"), resolver)
    assert [r.result for r in results] == ["fail", "fail"]


async def test_dkim_each_signature_gets_a_result() -> None:
    good, other = make_key(1024), make_key(1024)
    body = b"From: a@bank.test\r\nTo: b@ours.test\r\nSubject: hello\r\n\r\nHello.\r\n"
    signed = dkim.sign(body, b"s1", b"bank.test", good.private_pem) + body
    signed = dkim.sign(signed, b"s2", b"esp.test", other.private_pem) + signed
    signed = dkim.sign(signed, b"gone", b"bank.test", good.private_pem) + signed
    resolver = TableResolver({
        "s1._domainkey.bank.test": [("TXT", [good.record])],
        "s2._domainkey.esp.test": [("TXT", [good.record])],  # the wrong key
    })
    results = await verify_dkim(signed, resolver)
    assert [(r.result, r.selector) for r in results] == [("permerror", "gone"), ("fail", "s2"), ("pass", "s1")]
    assert await verify_dkim(body, resolver) == []


async def test_dkim_malformed_signature_is_permerror_and_timeout_temperror() -> None:
    body = b"DKIM-Signature: v=1; garbage\r\nFrom: a@bank.test\r\n\r\nx\r\n"
    [result] = await verify_dkim(body, TableResolver({}))
    assert result.result == "permerror"
    key = make_key(1024)
    unsigned = b"From: a@bank.test\r\n\r\nx\r\n"
    signed = dkim.sign(unsigned, b"s1", b"bank.test", key.private_pem) + unsigned
    [result] = await verify_dkim(signed, TableResolver({"s1._domainkey.bank.test": ["TIMEOUT"]}))
    assert result.result == "temperror"


# --- SPF through the resolver interface -------------------------------------------------------------

async def test_spf_null_sender_checks_helo_and_bad_client_address_is_none() -> None:
    resolver = TableResolver({"mail.bank.test": [("TXT", ["v=spf1 a -all"]), ("A", "192.0.2.7")]})
    result = await check_spf(resolver, "192.0.2.7", "", "mail.bank.test")
    assert (result.result, result.identity, result.domain) == ("pass", "helo", "mail.bank.test")
    assert (await check_spf(resolver, "unknown", "a@bank.test", "x")).result == "none"


def test_answer_cache_expires_and_never_keeps_temporary_errors() -> None:
    now = [0.0]
    cache = AnswerCache(size=2, clock=lambda: now[0])
    cache.put("a.test", "TXT", DnsAnswer("ok", ("x",)), 10)
    cache.put("b.test", "TXT", DnsAnswer("temperror"), 10)
    assert cache.get("a.test", "TXT") == DnsAnswer("ok", ("x",))
    assert cache.get("b.test", "TXT") is None
    now[0] = 11
    assert cache.get("a.test", "TXT") is None
    for name in ("c", "d", "e"):
        cache.put(name, "A", DnsAnswer("nodata"), 10)
    assert len(cache) == 2


# --- nothing the message or DNS does makes authenticate() raise ----------------------------------

MALFORMED = [
    b"",
    b"no header end at all",
    b"\x00\xff\xfe binary\r\n\r\n\x00",
    b"From: <@>\r\nFrom: nobody\r\n\r\n",
    b"From: a@b\xff\xfe.test\r\nDKIM-Signature: d=\xff; s=\x00; b=; bh=; h=from\r\n\r\nx",
    b"DKIM-Signature: v=1; a=rsa-sha256; d=bank.test; s=s1; h=from; bh=!!!; b=@@@\r\nFrom: a@bank.test\r\n\r\n",
    b"ARC-Seal: i=x; d=; s=\r\nARC-Message-Signature: garbage\r\nARC-Authentication-Results: nothing\r\n"
    b"From: a@bank.test\r\n\r\n",
    b"From: a@one.test, b@two.test\r\n\r\n",
    b"Authentication-Results:\r\nAuthentication-Results: (unterminated\r\n\r\n",
    b"".join(b"DKIM-Signature: v=1; d=d%d.test; s=s\r\n" % i for i in range(30)) + b"From: a@bank.test\r\n\r\n",
    b"".join(b"ARC-Seal: i=%d; d=d.test; s=s\r\n" % i for i in range(60)) + b"From: a@bank.test\r\n\r\n",
    # numbers longer than int() converts (4,300 digits), where the sender writes them (ingress refuses
    # lines over 998 octets, so over SMTP these come shorter; the checks must not depend on it)
    b"ARC-Seal: i=" + b"1" * 5000 + b"; d=d.test; s=s\r\nARC-Authentication-Results: i=" + b"2" * 5000
    + b"; d.test; spf=pass\r\nFrom: a@bank.test\r\n\r\n",
    b"DKIM-Signature: v=1; a=rsa-sha256; d=bank.test; s=s1; h=from; l=" + b"9" * 5000 + b"; t=" + b"9" * 5000
    + b"; bh=AAAA; b=AAAA\r\nFrom: a@bank.test\r\n\r\n",
]


@pytest.mark.parametrize("message", MALFORMED)
async def test_malformed_messages_give_results_not_exceptions(message: bytes) -> None:
    from mailmoat_antispam.auth import authenticate
    from mailmoat_platform.models import Envelope
    from mailmoat_policy import Policy

    resolver = TableResolver({"bank.test": ["TIMEOUT"], "_dmarc.bank.test": [("TXT", ["v=DMARC1; p=reject"])]})
    for mail_from, helo in (("a@bank.test", "x.test"), ("", ""), ("weird@", "[1.2.3.4]"), ("@@", "a..b")):
        envelope = Envelope(client_ip="192.0.2.1", mail_from=mail_from, helo=helo, rcpt_to=["u@ours.test"])
        result = await authenticate(envelope, message, resolver, Policy())
        header = authentication_results("mx.ours.test", result)
        assert header.startswith(b"Authentication-Results: mx.ours.test;") and header.endswith(b"\r\n")
        assert all(32 <= c < 127 for c in header.replace(b"\r\n ", b"")[:-2])
        assert len(result.dkim) <= 30 and all(r.result != "pass" for r in result.dkim)
        assert result.arc.result in ("none", "fail")


SPOOF = b"From: ceo@bank.test\r\nTo: u@ours.test\r\nSubject: wire the money\r\n\r\nToday.\r\n"


async def _spoof_result(message: bytes) -> AuthResult:
    from mailmoat_antispam.auth import authenticate
    from mailmoat_platform.models import Envelope
    from mailmoat_policy import Policy

    resolver = TableResolver({"bank.test": [("TXT", ["v=spf1 ip4:198.51.100.0/24 -all"])],
                              "_dmarc.bank.test": [("TXT", ["v=DMARC1; p=reject"])]})
    envelope = Envelope(client_ip="192.0.2.1", mail_from="ceo@bank.test", helo="x.test", rcpt_to=["u@ours.test"])
    return await authenticate(envelope, message, resolver, Policy())


@pytest.mark.parametrize("header", [
    b"ARC-Seal: i=1; a=rsa-sha256; cv=none; d=x.test; s=s; b=abc\r\nARC-Authentication-Results: i="
    + b"1" * 5000 + b"; x.test; dmarc=pass\r\n",
    b"ARC-Seal: i=" + b"1" * 5000 + b"; cv=none; d=x.test; s=s; b=abc\r\n",
])
async def test_a_header_the_arc_check_cannot_read_does_not_spare_a_spoof_its_dmarc_reject(header: bytes) -> None:
    """A defect in one check (here ARC's, on a number too long for int()) took the whole authentication
    with it, DMARC included: the spoof passed as unauthenticated instead of failing p=reject."""
    result = await _spoof_result(header + SPOOF)
    assert (result.dmarc.result, result.dmarc.effective) == ("fail", "reject")
    assert result.arc.result in ("none", "fail") and result.forged


@pytest.mark.parametrize("check", ["verify_arc", "verify_dkim"])
async def test_a_defect_in_one_check_leaves_dmarc_evaluated(check: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import mailmoat_antispam.auth as auth

    async def defect(*args: object) -> None:
        raise RuntimeError("a defect")

    monkeypatch.setattr(auth, check, defect)
    result = await _spoof_result(SPOOF)
    assert (result.dmarc.result, result.dmarc.effective) == ("fail", "reject")
    assert result.dkim == [] and result.arc.result in ("none", "fail")
