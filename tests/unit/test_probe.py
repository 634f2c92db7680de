"""The probe's judgement of a trace: delivered, failed for good, or still on its way."""

from __future__ import annotations

from mailmoat_cli.probe import judge, message
from mailmoat_platform.models import TraceEvent


def event(name: str, recipients: list[str] | None = None, detail: str = "") -> TraceEvent:
    return TraceEvent(event=name, message_id="m1", service="egress", recipients=recipients or [], detail=detail)


def test_delivered_to_the_probe_recipient() -> None:
    got = judge([event("RECEIVE", ["p@example.com"]), event("DELIVER", ["P@Example.com"], "250 ok")], "p@example.com")
    assert got.delivered and got.done


def test_delivered_to_another_recipient_is_not_the_probe() -> None:
    got = judge([event("DELIVER", ["other@example.com"])], "p@example.com")
    assert not got.delivered and not got.done


def test_refused_quarantined_or_bounced_ends_the_probe_at_once() -> None:
    for name in ("REJECT", "QUARANTINE", "FAIL", "DEADLETTER"):
        got = judge([event("RECEIVE"), event(name, detail="why")], "p@example.com")
        assert not got.delivered and got.done and name in got.reason


def test_deferred_is_still_on_its_way() -> None:
    got = judge([event("RECEIVE"), event("DEFER", ["p@example.com"], "451 later")], "p@example.com")
    assert not got.done and "DEFER" in got.reason and "451 later" in got.reason
    assert judge([], "p@example.com").reason == "no trace yet"


def test_message_is_small_and_identifiable() -> None:
    data = message("probe@mailmoat.invalid", "p@example.com", "abc")
    assert b"Message-ID: <probe-abc@mailmoat.probe>\r\n" in data and b"\n\r\n" in data and len(data) < 400
