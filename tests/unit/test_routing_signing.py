"""Which copies routing rewrites (SRS), seals (ARC) or reverses, and ingress's answer to SRS recipients."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from mailmoat_ingress.srsrcpt import INVALID, srs_recipient
from mailmoat_mail.keyfiles import FileCache
from mailmoat_mail.srs import forward
from mailmoat_platform.models import Envelope
from mailmoat_policy import Policy, parse_policy
from mailmoat_routing.signing import Signer, needs_seal, needs_srs

SECRET = b"unit-secret"


@pytest.fixture
def policy(tmp_path: Path) -> Policy:
    (tmp_path / "srs").write_bytes(SECRET + b"\n")
    (tmp_path / "arc.key").write_bytes(b"unused")
    return parse_policy(f"""
accepted_domains: [{{domain: example.com}}, {{domain: example.net}}]
srs: {{domain: srs.example.com, secret_file: {tmp_path}/srs}}
arc: {{domain: example.com, selector: arc1, key_file: {tmp_path}/arc.key}}
""")


@pytest.mark.parametrize(("sender", "rcpts", "wanted"), [
    ("ann@sender.test", ["bob@partner.example"], True),
    ("ann@sender.test", ["alice@example.com", "bob@partner.example"], True),
    ("ann@sender.test", ["alice@example.com"], False),          # stays with us: SPF was checked here
    ("alice@example.net", ["bob@partner.example"], False),      # our own domain: our SPF covers it
    ("", ["bob@partner.example"], False),                       # null sender: nothing to rewrite
    ("SRS0=x=AA=a=b@srs.example.com", ["bob@partner.example"], False),
])
def test_needs_srs(policy: Policy, sender: str, rcpts: list[str], wanted: bool) -> None:
    assert needs_srs(Envelope(mail_from=sender, rcpt_to=rcpts), policy) is wanted


@pytest.mark.parametrize(("direction", "changed", "rcpts", "wanted"), [
    ("inbound", True, ["alice@example.com"], True),
    ("inbound", False, ["bob@partner.example"], True),
    ("inbound", False, ["alice@example.com"], False),
    ("outbound", True, ["bob@partner.example"], False),
])
def test_needs_seal(policy: Policy, direction: str, changed: bool, rcpts: list[str], wanted: bool) -> None:
    assert needs_seal(Envelope(direction=direction, rcpt_to=rcpts), changed, policy) is wanted


def test_srs_rewrites_only_the_outside_copy_and_reverses_recipients(policy: Policy) -> None:
    signer = Signer()
    inside = Envelope(mail_from="ann@sender.test", rcpt_to=["alice@example.com"], direction="outbound")
    outside = inside.model_copy(update={"rcpt_to": ["bob@partner.example"]})
    treated = signer.treat([inside, outside], b"Subject: x\r\n\r\nbody\r\n", False, policy)
    (kept, _), (rewritten, _) = treated.copies
    assert kept.mail_from == "ann@sender.test"
    assert rewritten.mail_from.startswith("SRS0=") and rewritten.mail_from.endswith("@srs.example.com")
    dsn = Envelope(kind="dsn", rcpt_to=[rewritten.mail_from, "SRS0=AAAA=AA=x=y@srs.example.com"])
    back, events = signer.reverse_recipients(dsn, policy)
    assert back.rcpt_to == ["ann@sender.test", "SRS0=AAAA=AA=x=y@srs.example.com"]  # a forged one stays
    assert [e.event for e in events] == ["AGENTINFO", "AGENTINFO"]


def test_an_unreadable_secret_or_key_keeps_the_copy_going(policy: Policy, tmp_path: Path) -> None:
    (tmp_path / "srs").unlink()
    copy = Envelope(mail_from="ann@sender.test", rcpt_to=["bob@partner.example"])
    treated = Signer().treat([copy], b"\r\nx\r\n", False, policy)
    assert treated.copies[0][0].mail_from == "ann@sender.test"
    details = [e.detail for e in treated.events]
    assert any("sender not rewritten" in d for d in details)
    assert any(d.startswith("not ARC-sealed") for d in details)  # the key file holds no key: sent unsealed


def test_ingress_answers_for_srs_recipients(policy: Policy, tmp_path: Path) -> None:
    good = forward("ann@sender.test", "srs.example.com", SECRET, time.time())
    assert srs_recipient(policy, good) == (None, "ann@sender.test", "SRS SRS0 reversed")
    reply, _, why = srs_recipient(policy, good.replace("=ann@", "=eve@"))  # type: ignore[misc]
    assert reply == INVALID and "hash" in why
    old = forward("ann@sender.test", "srs.example.com", SECRET, time.time() - 40 * 86400)
    reply, _, why = srs_recipient(policy, old)  # type: ignore[misc]
    assert reply == INVALID and "expired" in why
    assert srs_recipient(policy, "alice@srs.example.com") is None   # not SRS: the usual checks
    assert srs_recipient(policy, "SRS0=a=b=c=d@example.com") is None  # not at the SRS domain
    (tmp_path / "srs").unlink()
    reply, _, _ = srs_recipient(policy, good, files=FileCache())  # type: ignore[misc]
    assert reply is not None and reply.startswith("451 4.3.0")


@pytest.mark.parametrize("sender", ['"john smith"@sender.test', "postmaster"])
def test_a_sender_srs_cannot_rewrite_is_kept(policy: Policy, sender: str) -> None:
    copy = Envelope(mail_from=sender, rcpt_to=["bob@partner.example"])
    treated = Signer().treat([copy], b"From: x@sender.test\r\n\r\nx\r\n", False, policy)
    assert treated.copies[0][0].mail_from == sender


def test_the_hostile_corpus_is_signed_and_sealed_without_an_exception(tmp_path: Path) -> None:
    """Every generated hostile message (tests/support/hostile.py) as outbound mail of a signing domain
    (DKIM, SRS) and as inbound mail forwarded outside (ARC): the routing step never raises, and what
    it signs verifies."""
    import dkim

    from mailmoat_mail.dkimsign import generate_key
    from tests.support.hostile import cases

    rsa_pem, rsa_record = generate_key("rsa")
    (tmp_path / "rsa.key").write_bytes(rsa_pem)
    (tmp_path / "srs").write_bytes(SECRET + b"\n")
    policy = parse_policy(f"""
accepted_domains: [{{domain: sender.example.org}}]
dkim: {{domains: [{{domain: sender.example.org, keys: [{{selector: r1, key_file: {tmp_path}/rsa.key}}]}}]}}
arc: {{domain: sender.example.org, selector: r1, key_file: {tmp_path}/rsa.key}}
srs: {{domain: srs.example.com, secret_file: {tmp_path}/srs}}
""")
    lookup = {b"r1._domainkey.sender.example.org.": rsa_record.encode()}
    signer, signed = Signer(), 0
    reach = [c for c in cases() if c.expect != "refuse"]  # ingress refuses the others (bare CR or LF)
    for case in reach:
        outbound = Envelope(direction="outbound", mail_from="ann@outside.example", rcpt_to=["bob@partner.example"])
        (copy, data), = signer.treat([outbound], case.data, False, policy).copies
        assert copy.mail_from.startswith("SRS0="), case.name
        if data is not case.data:
            signed += 1
            assert dkim.verify(data, dnsfunc=lambda name, timeout=5: lookup.get(name)), case.name
        inbound = Envelope(direction="inbound", rcpt_to=["bob@partner.example"])
        with_ar = b"Authentication-Results: mailmoat.localdomain; spf=pass smtp.mailfrom=x.example\r\n" + case.data
        signer.treat([inbound], with_ar, True, policy)
    assert signed >= len(reach) // 2
