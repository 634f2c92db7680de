"""What happens after a delivery attempt: delivered, bounced (with a DSN) or deferred to a retry queue."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from mailmoat_egress.delivery import RcptResult
from mailmoat_mail.dsn import Failure, build_dsn
from mailmoat_platform.models import Envelope
from mailmoat_policy import Policy

EXPIRED_STATUS = "4.4.7"


@dataclass
class Retry:
    envelope: Envelope
    delay: int
    """Seconds to wait (the delay queue to use)."""


@dataclass
class Outcome:
    delivered: list[RcptResult] = field(default_factory=list)
    failed: list[Failure] = field(default_factory=list)
    """Permanent failures, including temporary ones past the expiry."""
    deferred: list[RcptResult] = field(default_factory=list)
    retry: Retry | None = None
    dsn: tuple[Envelope, bytes] | None = None
    expired: bool = False


def retry_delay(attempts: int, delays: list[int]) -> int:
    """Delay after the ``attempts``-th attempt (1-based); the last delay repeats."""
    return delays[min(max(attempts, 1) - 1, len(delays) - 1)]


LOCK_WAITS = (1, 2, 5, 10, 30)
"""Delay queues (seconds) a copy waits in while another consumer holds its delivery lock."""


def lock_wait(remaining: float) -> int:
    """The delay queue for a copy whose lock lives ``remaining`` more seconds: the shortest one that
    outlasts the lock (a dead owner's lock has lapsed by then; a live owner has usually finished and
    recorded the recipients, so the copy is skipped), the longest when none does."""
    return next((d for d in LOCK_WAITS if d >= remaining), LOCK_WAITS[-1])


def _failure(result: RcptResult, status: str | None = None) -> Failure:
    return Failure(result.recipient, status or result.enhanced or f"{str(result.code)[0]}.0.0", result.reply,
                   result.remote_host)


def decide(envelope: Envelope, data: bytes, results: list[RcptResult], now: datetime, policy: Policy) -> Outcome:
    """Sort each recipient's result into delivered, failed or deferred, with the retry copy and DSN."""
    outcome = Outcome()
    temporary: list[RcptResult] = []
    for result in results:
        if result.ok:
            outcome.delivered.append(result)
        elif result.permanent:
            outcome.failed.append(_failure(result))
        else:
            temporary.append(result)
    attempts = envelope.attempts + 1
    first = envelope.first_attempt_at or now
    if temporary:
        if (now - first).total_seconds() >= policy.delivery.expire_after:
            outcome.expired = True
            outcome.failed.extend(_failure(r, EXPIRED_STATUS) for r in temporary)
        else:
            outcome.deferred = temporary
            delay = retry_delay(attempts, policy.delivery.retry_delays)
            copy = envelope.model_copy(deep=True)
            copy.rcpt_to = [r.recipient for r in temporary]
            copy.attempts = attempts
            copy.first_attempt_at = first
            copy.last_error = "; ".join(sorted({r.reply for r in temporary}))[:1000]
            outcome.retry = Retry(copy, delay)
    if outcome.failed:
        outcome.dsn = build_dsn(envelope, data, outcome.failed, now, policy.organization.hostname)
    return outcome


__all__ = ["EXPIRED_STATUS", "LOCK_WAITS", "Outcome", "Retry", "decide", "lock_wait", "retry_delay"]
