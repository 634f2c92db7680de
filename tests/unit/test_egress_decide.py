"""After-delivery decisions: delivered, deferred with growing delays, bounced, expired with 4.4.7."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mailmoat_egress.decide import EXPIRED_STATUS, decide, lock_wait, retry_delay
from mailmoat_egress.delivery import make_result, split_reply
from mailmoat_platform.models import Envelope, Route
from mailmoat_policy import Policy

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
DATA = b"Subject: t\r\n\r\nbody\r\n"


def _policy(delays: list[int] | None = None, expire: int = 3600) -> Policy:
    return Policy.model_validate({"delivery": {"retry_delays": delays or [60, 300, 900], "expire_after": expire},
                                  "organization": {"hostname": "gw.test"}})


def _env(**kw) -> Envelope:
    base = dict(mail_from="s@out.org", rcpt_to=["a@x.test", "b@x.test", "c@x.test"], itinerary=["routing", "egress"],
                route=Route(name="route:onprem", kind="smarthost", hosts=["127.0.0.1:25"]))
    base.update(kw)
    return Envelope(**base)


def test_split_reply() -> None:
    assert split_reply(550, "5.1.1 <a@x> no such user") == ("5.1.1", "<a@x> no such user")
    assert split_reply(451, "try later") == ("4.0.0", "try later")
    assert split_reply(250, "2.0.0 Ok: queued as 12") == ("2.0.0", "Ok: queued as 12")
    assert split_reply(550, "5.1.1 no such\n5.1.1 user") == ("5.1.1", "no such user")
    assert split_reply(550, "5.1.1 no such\nuser here") == ("5.1.1", "no such user here")
    assert make_result("a", 550, "5.7.1 denied").reply == "550 5.7.1 denied"


@pytest.mark.parametrize(("attempts", "delay"), [(1, 60), (2, 300), (3, 900), (4, 900), (50, 900)])
def test_retry_delay(attempts: int, delay: int) -> None:
    assert retry_delay(attempts, [60, 300, 900]) == delay


def test_mixed_results() -> None:
    envelope = _env()
    results = [
        make_result("a@x.test", 250, "2.0.0 Ok: queued", "mx1"),
        make_result("b@x.test", 550, "5.1.1 no such user", "mx1"),
        make_result("c@x.test", 451, "4.3.0 try later", "mx1"),
    ]
    outcome = decide(envelope, DATA, results, NOW, _policy())
    assert [r.recipient for r in outcome.delivered] == ["a@x.test"]
    assert [(f.recipient, f.status, f.remote_mta) for f in outcome.failed] == [("b@x.test", "5.1.1", "mx1")]
    assert outcome.retry is not None
    copy = outcome.retry.envelope
    assert copy.rcpt_to == ["c@x.test"] and copy.attempts == 1 and copy.first_attempt_at == NOW
    assert copy.id == envelope.id and copy.route == envelope.route
    assert "451 4.3.0 try later" in (copy.last_error or "")
    assert outcome.retry.delay == 60
    assert envelope.rcpt_to == ["a@x.test", "b@x.test", "c@x.test"], "input envelope untouched"
    assert outcome.dsn is not None
    dsn, data = outcome.dsn
    assert dsn.rcpt_to == ["s@out.org"] and b"b@x.test" in data and b"c@x.test" not in data


def test_growing_delays_and_first_attempt_kept() -> None:
    first = NOW - timedelta(minutes=10)
    envelope = _env(rcpt_to=["a@x.test"], attempts=2, first_attempt_at=first)
    outcome = decide(envelope, DATA, [make_result("a@x.test", 421, "busy")], NOW, _policy())
    assert outcome.retry is not None
    assert outcome.retry.delay == 900
    assert outcome.retry.envelope.attempts == 3
    assert outcome.retry.envelope.first_attempt_at == first
    assert outcome.dsn is None and not outcome.failed


def test_expiry_turns_temporary_into_447() -> None:
    envelope = _env(rcpt_to=["a@x.test"], attempts=5, first_attempt_at=NOW - timedelta(seconds=3600))
    outcome = decide(envelope, DATA, [make_result("a@x.test", 451, "4.7.10 no STARTTLS")], NOW, _policy())
    assert outcome.retry is None and outcome.expired
    assert [(f.recipient, f.status) for f in outcome.failed] == [("a@x.test", EXPIRED_STATUS)]
    assert "4.7.10 no STARTTLS" in outcome.failed[0].diagnostic
    assert outcome.dsn is not None


def test_not_expired_just_before() -> None:
    envelope = _env(rcpt_to=["a@x.test"], attempts=5, first_attempt_at=NOW - timedelta(seconds=3599))
    outcome = decide(envelope, DATA, [make_result("a@x.test", 451, "later")], NOW, _policy())
    assert outcome.retry is not None and not outcome.failed


def test_no_dsn_for_null_sender_or_dsn() -> None:
    for envelope in (_env(mail_from=""), _env(kind="dsn", mail_from="")):
        outcome = decide(envelope, DATA, [make_result("a@x.test", 550, "5.1.1 no")], NOW, _policy())
        assert outcome.failed and outcome.dsn is None
    expired = _env(mail_from="", first_attempt_at=NOW - timedelta(days=3))
    outcome = decide(expired, DATA, [make_result("a@x.test", 451, "later")], NOW, _policy())
    assert outcome.failed and outcome.dsn is None


def test_all_delivered() -> None:
    outcome = decide(_env(rcpt_to=["a@x.test"]), DATA, [make_result("a@x.test", 250, "ok", "h")], NOW, _policy())
    assert outcome.retry is None and outcome.dsn is None and not outcome.failed and len(outcome.delivered) == 1


def test_local_failure_without_reply_is_temporary() -> None:
    result = make_result("a@x.test", 421, "4.4.1 cannot connect")
    assert result.temporary and not result.permanent and result.remote_host == ""
    outcome = decide(_env(rcpt_to=["a@x.test"]), DATA, [result], NOW, _policy([1, 2]))
    assert outcome.retry is not None and outcome.retry.delay == 1


@pytest.mark.parametrize(("remaining", "queue"), [(0.001, 1), (1.0, 1), (1.8, 2), (9.99, 10), (10.0, 10), (45, 30)])
def test_lock_wait_outlasts_the_lock(remaining: float, queue: int) -> None:
    """A copy whose lock is held waits in the shortest delay queue that outlasts the lock."""
    assert lock_wait(remaining) == queue
