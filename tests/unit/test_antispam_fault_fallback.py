"""When the antispam stage fails on a message, what needs no content is still judged: the sender's
authentication and the allow and block lists (``Checker.fallback``, ``service.failed``). A spoof of a
``p=reject`` domain is refused, not delivered unchecked as the ``error`` verdict alone would have it."""

from __future__ import annotations

from mailmoat_antispam.check import Checker
from mailmoat_antispam.service import failed
from mailmoat_antispam.verdict import AntispamVerdict
from mailmoat_mail.dsn import wants_dsn
from mailmoat_platform.models import Envelope, Verdict
from mailmoat_platform.stagefault import error_detail
from mailmoat_policy import parse_policy
from mailmoat_routing.actions import disposition
from tests.support.spfsuite import TableResolver

ZONE = {
    "bank.test": [("TXT", ["v=spf1 ip4:198.51.100.0/24 -all"])],
    "_dmarc.bank.test": [("TXT", ["v=DMARC1; p=reject"])],
    "shop.test": [("TXT", ["v=spf1 ip4:203.0.113.0/24 -all"])],
    "_dmarc.shop.test": [("TXT", ["v=DMARC1; p=quarantine"])],
    "nodmarc.test": [("TXT", ["v=spf1 ip4:198.51.100.0/24 -all"])],
}
ERROR = error_detail(ValueError("injected"))


def _envelope(mail_from: str) -> Envelope:
    return Envelope(mail_from=mail_from, rcpt_to=["alice@example.com"], client_ip="192.0.2.7", helo="mx.evil.test",
                    itinerary=["antispam", "routing", "egress"])


def _message(author: str) -> bytes:
    return f"From: {author}\r\nTo: alice@example.com\r\nSubject: hi\r\n\r\nbody\r\n".encode()


async def _failed(author: str, mail_from: str, policy_text: str = "{}"
                  ) -> tuple[Envelope, Verdict, bytes, bytes]:
    policy = parse_policy(policy_text)
    envelope, data = _envelope(mail_from), _message(author)
    partial = await Checker(auth_resolver=TableResolver(ZONE)).fallback(envelope, data, policy)
    verdict, header, body = failed(ERROR, envelope, data, policy, partial)
    envelope.add_verdict(verdict)
    return envelope, verdict, header, body


async def test_a_spoof_of_a_reject_domain_is_refused_with_5_7_509_and_no_dsn() -> None:
    envelope, verdict, header, body = await _failed("<ceo@bank.test>", "x@evil.test")
    assert verdict.result == "error" and verdict.detail["error"] == "ValueError: injected"
    assert verdict.detail["dmarc"]["result"] == "fail" and verdict.detail["dmarc"]["policy"] == "reject"
    assert verdict.detail["categories"] == ["spoof"] and verdict.detail["scl"] == 5
    action = disposition(envelope, parse_policy("{}"))
    assert (action.action, action.cause, action.status) == ("reject", "dmarc_reject", "5.7.509")
    assert not wants_dsn(envelope)  # the sender is forged: no backscatter
    assert header.replace(b"\r\n\t", b"").startswith(
        b"X-Mailmoat-Antispam-Report: CIP:192.0.2.7;SFV:ERR;ERR:ValueError;SCL:5;DMARC:fail\r\n")
    assert b"\r\nAuthentication-Results: " in header and b"dmarc=fail" in header
    assert body == _message("<ceo@bank.test>")


async def test_a_quarantine_domain_is_quarantined() -> None:
    envelope, _, _, _ = await _failed("<shop@shop.test>", "x@evil.test")
    action = disposition(envelope, parse_policy("{}"))
    assert (action.action, action.cause) == ("quarantine", "dmarc_quarantine")


async def test_an_authenticated_or_unprotected_author_claims_no_scl_and_takes_the_error_action() -> None:
    for author, client_ip in (("<ceo@bank.test>", "198.51.100.9"), ("<a@nodmarc.test>", "192.0.2.7")):
        policy = parse_policy("{}")
        envelope, data = _envelope(author.strip("<>")), _message(author)
        envelope.client_ip = client_ip
        partial = await Checker(auth_resolver=TableResolver(ZONE)).fallback(envelope, data, policy)
        verdict, header, _ = failed(ERROR, envelope, data, policy, partial)
        envelope.add_verdict(verdict)
        assert "scl" not in verdict.detail and "categories" not in verdict.detail, author
        assert verdict.detail["auth"]["spf"]["result"] in ("pass", "fail"), author
        assert b";SCL:" not in header.split(b"\r\n")[0]
        assert disposition(envelope, policy).action == "deliver"
        held = disposition(envelope, parse_policy("antispam: {actions: {error: quarantine}}"))
        assert (held.action, held.cause) == ("quarantine", "error")
        assert wants_dsn(envelope)


async def test_allowed_and_blocked_senders_are_still_listed() -> None:
    quarantine_errors = "antispam: {actions: {error: quarantine}, %s}"
    envelope, verdict, header, _ = await _failed("<ceo@bank.test>", "x@evil.test",
                                                 quarantine_errors % "allowed_senders: [x@evil.test]")
    assert verdict.detail["scl"] == -1 and verdict.detail["allowed"] == "allowed sender x@evil.test"
    assert disposition(envelope, parse_policy(quarantine_errors % "allowed_senders: [x@evil.test]")).action == "deliver"
    assert b";SCL:-1" in header.replace(b"\r\n\t", b"")
    envelope, verdict, _, _ = await _failed("<a@nodmarc.test>", "a@nodmarc.test",
                                            quarantine_errors % "blocked_domains: [nodmarc.test]")
    assert verdict.detail["scl"] == 9 and verdict.detail["categories"] == ["hcspam"]
    action = disposition(envelope, parse_policy(quarantine_errors % "blocked_domains: [nodmarc.test]"))
    assert (action.action, action.cause) == ("quarantine", "hcspam")


async def test_without_a_fallback_the_error_verdict_is_as_before() -> None:
    policy = parse_policy("{}")
    envelope, data = _envelope("x@evil.test"), _message("<ceo@bank.test>")
    verdict, header, body = failed(ERROR, envelope, data, policy, None)
    assert verdict.detail == ERROR
    assert header == b"X-Mailmoat-Antispam-Report: CIP:192.0.2.7;SFV:ERR;ERR:ValueError\r\n" and body == data


async def test_a_fallback_that_fails_too_gives_none() -> None:
    class Broken:
        async def query(self, name: str, rdtype: str):
            raise RuntimeError("resolver bug")

    envelope, data = _envelope("x@evil.test"), _message("<ceo@bank.test>")
    checker = Checker(auth_resolver=Broken())  # type: ignore[arg-type]
    partial = await checker.fallback(envelope, data, parse_policy("{}"))
    # every check is guarded on its own: the result is there, without a pass
    assert partial is not None and partial.verdict.detail["dmarc"]["result"] != "pass"

    async def explode(*args: object) -> None:
        raise RuntimeError("block list bug")

    checker._console_blocks = explode  # type: ignore[method-assign]
    assert await checker.fallback(envelope, data, parse_policy("{}")) is None
    assert AntispamVerdict.wire(**ERROR) == ERROR


async def test_results_that_cannot_be_written_still_leave_the_verdict(monkeypatch) -> None:
    from mailmoat_antispam import service

    def broken(*args: object) -> bytes:
        raise RuntimeError("writer bug")

    monkeypatch.setattr(service, "authentication_results", broken)
    envelope, _, header, _ = await _failed("<ceo@bank.test>", "x@evil.test")
    assert b"Authentication-Results" not in header and b"SFV:ERR" in header
    assert disposition(envelope, parse_policy("{}")).status == "5.7.509"
