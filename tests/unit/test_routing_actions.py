"""Verdicts to actions (decision 004): precedence, allow lists, released messages, and the edits."""

from __future__ import annotations

import base64
import email
import email.policy
from datetime import UTC, datetime

import pytest

from mailmoat_antispam.verdict import AntispamVerdict
from mailmoat_antivirus.decide import analyse
from mailmoat_antivirus.decide import decide as av_decide
from mailmoat_antivirus.verdict import AntivirusVerdict
from mailmoat_platform.models import Envelope, Verdict
from mailmoat_platform.verdicts import read
from mailmoat_policy import Antimalware, parse_policy
from mailmoat_routing.actions import carry_out, disposition, ndr_for
from tests.support.attachments import mz_executable


def spam_hits(verdict: Verdict) -> list[str]:
    return read(AntispamVerdict, verdict.detail, verdict.stage).hits(verdict)


def strip_paths(verdict: Verdict) -> tuple[str, ...]:
    return read(AntivirusVerdict, verdict.detail, verdict.stage).strip_paths()

NOW = datetime(2026, 11, 29, 4, 0, tzinfo=UTC)
DATA = (b"From: s@sender.test\r\nTo: a@example.com\r\nSubject: offer\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n"
        b"--b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=e.com\r\n"
        b"\r\nX5O!P\r\n--b--\r\n")


def policy(text: str = ""):
    return parse_policy(text or "{}")


def env(*verdicts: Verdict, **kw) -> Envelope:
    base = dict(mail_from="s@sender.test", rcpt_to=["a@example.com", "b@example.com"],
                itinerary=["routing", "egress"])
    base.update(kw)
    envelope = Envelope(**base)
    for verdict in verdicts:
        envelope.add_verdict(verdict)
    return envelope


def av(result: str = "malware", action: str | None = "quarantine", **detail) -> Verdict:
    if action:
        detail["action"] = action
    return Verdict(stage="antivirus", result=result, detail={"names": ["Eicar-Test-Signature"], **detail})


def spam(result: str, scl: int = 5, **detail) -> Verdict:
    return Verdict(stage="antispam", result=result, detail={"scl": scl, "category": result, **detail})


def conn(result: str, **detail) -> Verdict:
    return Verdict(stage="connection_filter", result=result, detail={"client_ip": "192.0.2.7", **detail})


def dmarc(policy: str, **detail) -> Verdict:
    return Verdict(stage="antispam", result="clean", detail={
        "scl": 1, "dmarc": {"result": "fail", "policy": policy, "domain": "sender.test"}, **detail})


def test_no_verdicts_or_clean_delivers() -> None:
    assert disposition(env(), policy()).action == "deliver"
    clean = env(av("clean", None), spam("clean", 1), conn("pass"))
    assert disposition(clean, policy()).cause == "none"
    assert disposition(env(av("unscanned", None)), policy()).action == "deliver"


def test_default_actions() -> None:
    p = policy()
    expected = {"spam": "junk", "bulk": "junk", "spoof": "quarantine", "hcspam": "quarantine", "phish": "quarantine",
                "hcphish": "quarantine"}
    for category, action in expected.items():
        d = disposition(env(spam(category, 7)), p)
        assert (d.action, d.cause, d.stage) == (action, category, "antispam")


@pytest.mark.parametrize(
    ("verdicts", "cause"),
    [
        ((av(), conn("reject", reason="dnsbl"), spam("hcphish", 9)), "malware"),
        ((conn("reject", reason="dnsbl"), spam("hcphish", 9)), "connection"),
        ((spam("phish", 9, categories=["phish", "hcphish", "spam"]),), "hcphish"),
        ((spam("spam", 6, categories=["phish", "hcspam"]),), "phish"),
        ((spam("hcspam", 8, dmarc={"result": "fail", "policy": "reject"}),), "hcspam"),
        ((spam("spoof", 6, dmarc={"result": "fail", "policy": "reject"}),), "dmarc_reject"),
        ((spam("spoof", 6, dmarc={"result": "fail", "policy": "quarantine"}),), "dmarc_quarantine"),
        ((spam("spam", 6, categories=["spam", "spoof", "bulk"]),), "spoof"),
        ((spam("bulk", 6, categories=["bulk", "spam"]),), "spam"),
        ((spam("bulk", 6),), "bulk"),
        ((spam("clean", 1, dmarc={"result": "pass", "policy": "reject"}),), "none"),
        ((spam("clean", 1, dmarc={"result": "fail", "policy": "none"}),), "none"),
    ],
)
def test_precedence(verdicts: tuple[Verdict, ...], cause: str) -> None:
    assert disposition(env(*verdicts), policy()).cause == cause


def test_every_antivirus_result_but_clean_is_malware() -> None:
    for result in ("malware", "archive-bomb", "blocked-type", "encrypted", "unscannable"):
        d = disposition(env(av(result, "quarantine")), policy())
        assert (d.action, d.cause, d.result) == ("quarantine", "malware", result)


def test_antivirus_action_from_verdict_else_policy() -> None:
    assert disposition(env(av(action="reject")), policy()).action == "reject"
    assert disposition(env(av(action=None)), policy("antimalware: {action: strip}")).action == "strip"


def test_released_message_skips_every_action() -> None:
    d = disposition(env(av(), spam("hcphish", 9), released_from="Q1"), policy())
    assert (d.action, d.cause) == ("deliver", "released")


def test_allow_list_skips_spam_actions_but_not_malware_nor_hcphish() -> None:
    allowed = conn("allow", scl=-1)
    assert disposition(env(allowed, spam("hcspam", 9)), policy()).action == "deliver"
    assert disposition(env(allowed, dmarc("reject")), policy()).action == "deliver"
    assert disposition(env(spam("allowed", -1, categories=["spam"])), policy()).action == "deliver"
    assert disposition(env(allowed, av()), policy()).cause == "malware"
    assert disposition(env(allowed, spam("hcphish", 9)), policy()).cause == "hcphish"


def test_reject_status_codes() -> None:
    d = disposition(env(dmarc("reject")), policy())
    assert (d.action, d.status) == ("reject", "5.7.509")
    assert "does not pass DMARC verification and has a DMARC policy of reject" in d.reason
    d = disposition(env(conn("reject", reason="dnsbl", dnsbl=[
        {"zone": "bl.test", "result": "listed", "action": "reject"}])), policy())
    assert (d.action, d.status) == ("reject", "5.7.1") and "bl.test" in d.reason
    assert disposition(env(av(action="reject")), policy()).status == "5.7.1"
    p = policy("antispam: {actions: {dmarc_quarantine: reject}}")
    assert disposition(env(dmarc("quarantine")), p).status == "5.7.1"


def test_spam_hits_collects_every_source() -> None:
    verdict = spam("spam", 6, categories=["bulk"], dmarc={"result": "FAIL", "policy": "Quarantine"})
    assert spam_hits(verdict) == ["dmarc_quarantine", "spam", "bulk"]


def test_ndr_to_sender_not_to_null_or_forged() -> None:
    d = disposition(env(dmarc("reject")), policy())
    built = ndr_for(d, env(dmarc("reject")), DATA, NOW, "gw.test")
    assert built is not None
    ndr, data = built
    assert ndr.rcpt_to == ["s@sender.test"] and ndr.mail_from == "" and ndr.kind == "dsn"
    assert ndr.itinerary == ["routing", "egress"]
    report = email.message_from_bytes(data, policy=email.policy.default)
    status = next(p for p in report.walk() if p.get_content_type() == "message/delivery-status")
    text = status.as_string()
    assert "Status: 5.7.509" in text and "Final-Recipient: rfc822; b@example.com" in text
    assert b"X5O!P" not in data  # only the headers go back
    again = ndr_for(d, env(dmarc("reject"), id=ndr.parent_id), DATA, NOW, "gw.test")
    assert again is not None and again[0].id == ndr.id  # a redelivery builds the same report
    assert ndr_for(d, env(dmarc("reject"), mail_from=""), DATA, NOW, "gw.test") is None
    assert ndr_for(d, env(dmarc("reject", forged=True)), DATA, NOW, "gw.test") is None


def test_prepend_subject_and_junk() -> None:
    p = policy("antispam: {actions: {spam: prepend_subject}, subject_prefix: '[Suspect] '}")
    envelope = env(spam("spam", 5))
    out = carry_out(disposition(envelope, p), envelope, DATA, p)
    assert out.delivers and out.data == DATA.replace(b"Subject: offer", b"Subject: [Suspect] offer")
    junk = carry_out(disposition(envelope, policy()), envelope, DATA, policy())
    assert junk.action == "junk" and junk.delivers and junk.data is DATA


def test_redirect_replaces_recipients() -> None:
    p = policy("antispam: {actions: {bulk: redirect}, redirect_to: review@example.com}")
    envelope = env(spam("bulk", 6))
    out = carry_out(disposition(envelope, p), envelope, DATA, p)
    assert out.delivers and out.envelope.rcpt_to == ["review@example.com"] and out.data is DATA
    assert out.detail["original_recipients"] == ["a@example.com", "b@example.com"]
    assert envelope.rcpt_to == ["a@example.com", "b@example.com"]


@pytest.mark.parametrize("action", ["quarantine", "delete"])
def test_ending_actions(action: str) -> None:
    p = policy(f"antispam: {{actions: {{hcspam: {action}}}}}")
    envelope = env(spam("hcspam", 8))
    out = carry_out(disposition(envelope, p), envelope, DATA, p)
    assert out.action == action and not out.delivers


def test_strip_by_named_parts_else_attachments_else_quarantine() -> None:
    named = av(action="strip", findings={"malware": ["Eicar-Test-Signature in part 1.2 (e.com)"]})
    assert strip_paths(named) == ("1.2",)
    assert strip_paths(av(action="strip", strip=["1.3"], findings={"malware": ["x in part 1.2"]})) == ("1.3",)
    envelope = env(named)
    out = carry_out(disposition(envelope, policy()), envelope, DATA, policy())
    assert out.action == "strip" and out.detail["stripped"] == ["1.2"] and b"X5O!P" not in out.data
    assert out.data.startswith(DATA[: DATA.index(b"--b\r\nContent-Type: application")])
    assert out.envelope.size == len(out.data)
    unnamed = env(av(action="strip", findings={"malware": ["Eicar-Test-Signature in message"]}))
    out = carry_out(disposition(unnamed, policy()), unnamed, DATA, policy())
    assert out.action == "strip" and b"X5O!P" not in out.data
    plain = b"From: s@sender.test\r\nSubject: x\r\n\r\nX5O!P\r\n"
    out = carry_out(disposition(unnamed, policy()), unnamed, plain, policy())
    assert out.action == "quarantine" and not out.delivers and out.data is plain


def test_strip_after_two_delimiter_lines_in_a_row_removes_the_part_the_filter_named() -> None:
    """``--b`` right after ``--b`` (CPython's msg_37): the filters' parser makes no part between them, the
    editor made an empty one, so every later path named another part: the executable the antivirus
    stage named ``1.3`` was delivered and the clean text before it was stripped instead."""
    exe = base64.encodebytes(mz_executable()).replace(b"\n", b"\r\n")
    data = (b"From: s@sender.test\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
            b"--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b\r\n--b\r\nContent-Type: text/plain\r\n\r\nclean\r\n"
            b"--b\r\nContent-Type: application/octet-stream; name=report.txt\r\nContent-Transfer-Encoding: base64\r\n"
            b"\r\n" + exe + b"--b--\r\n")
    rules = Antimalware(action="strip")
    verdict = av_decide(analyse(data, rules)[0], rules)
    assert verdict.detail["strip"] == ["1.3"]
    envelope = env(verdict)
    out = carry_out(disposition(envelope, policy("antimalware: {action: strip}")), envelope, data, policy())
    assert out.action == "strip" and out.detail["stripped"] == ["1.3"]
    assert exe[:40] not in out.data and b"\r\nclean\r\n" in out.data


def test_strip_after_a_header_section_ended_by_a_delimiter_removes_the_part_the_filter_named() -> None:
    """A delimiter line right after the fields, without the blank line: the filters' parser ends the fields
    there and finds three parts; the editor read on to the first blank line, took the first part's fields
    for the message's, and numbered from the second part on, so the strip of ``1.2`` removed the clean
    part after the executable."""
    exe = base64.encodebytes(mz_executable()).replace(b"\n", b"\r\n")
    data = (b"From: s@sender.test\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n"
            b"--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n"
            b"--b\r\nContent-Type: application/octet-stream; name=report.txt\r\nContent-Transfer-Encoding: base64\r\n"
            b"\r\n" + exe + b"--b\r\nContent-Type: text/plain\r\n\r\nclean\r\n--b--\r\n")
    rules = Antimalware(action="strip")
    verdict = av_decide(analyse(data, rules)[0], rules)
    assert verdict.detail["strip"] == ["1.2"]
    envelope = env(verdict)
    out = carry_out(disposition(envelope, policy("antimalware: {action: strip}")), envelope, data, policy())
    assert out.action == "strip" and out.detail["stripped"] == ["1.2"]
    assert exe[:40] not in out.data and b"\r\nclean\r\n" in out.data


def test_strip_of_a_named_part_the_editor_cannot_find_quarantines() -> None:
    """Every part the filter named is stripped, or the message is held: never delivered half stripped."""
    both = env(av(action="strip", strip=["1.2", "1.9"], findings={"malware": ["x in part 1.2", "y in part 1.9"]}))
    out = carry_out(disposition(both, policy()), both, DATA, policy())
    assert out.action == "quarantine" and not out.delivers and out.data is DATA
    assert "part 1.9 not found to strip" in out.disposition.reason
    inside = env(av(action="strip", strip=["1.2.uu1"], findings={"malware": ["x in part 1.2.uu1"]}))
    out = carry_out(disposition(inside, policy()), inside, DATA, policy())
    assert out.action == "strip" and out.detail["stripped"] == ["1.2"]


def test_stage_error_verdicts_by_policy() -> None:
    """Issue 13: a filter stage that failed on a message leaves an error verdict that routing acts on."""
    from mailmoat_antivirus.decide import failed
    from mailmoat_platform.stagefault import error_detail
    from mailmoat_policy import PolicyError

    detail = error_detail(ValueError("bad"))
    spam_error = Verdict(stage="antispam", result="error", detail=detail)
    assert disposition(env(spam_error), policy()).action == "deliver"
    held = disposition(env(spam_error), policy("antispam: {actions: {error: quarantine}}"))
    assert (held.action, held.cause, held.stage) == ("quarantine", "error", "antispam")
    assert "ValueError: bad" in held.reason
    allowed = Verdict(stage="connection_filter", result="allow", detail={"scl": -1})
    assert disposition(env(allowed, spam_error), policy("antispam: {actions: {error: quarantine}}")).action == "deliver"
    with pytest.raises(PolicyError, match="error: reject is not allowed"):
        policy("antispam: {actions: {error: reject}}")
    cf_error = Verdict(stage="connection_filter", result="error", detail=detail)
    assert disposition(env(cf_error), policy()).action == "deliver"
    for action in ("quarantine", "reject", "strip"):
        av_failed = failed(detail, policy(f"antimalware: {{action: {action}}}").antimalware)
        disp = disposition(env(av_failed), policy(f"antimalware: {{action: {action}}}"))
        assert (disp.action, disp.cause, disp.result) == ("quarantine", "malware", "unscannable")
    lenient = policy("antimalware: {unscannable: allow}")
    assert disposition(env(failed(detail, lenient.antimalware)), lenient).action == "deliver"
