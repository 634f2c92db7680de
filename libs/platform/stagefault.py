"""A filter stage's unexpected error on one message: a verdict, never a dead letter (issue 13).

When the code of a filter stage (connection filter, antivirus, antispam) fails on a message for a
reason of its own, a bug or input it did not expect, the message is not retried into ``mailmoat.dead``:
the stage passes it on with an error verdict (``error``; the antivirus stage says ``unscannable``)
whose detail names the error, and routing acts on that verdict by policy (docs/policy.md, "When a
filter stage fails on a message"). The error is logged with its traceback, traced as an ``ERROR``
event and counted in ``mailmoat_stage_errors_total``: a bug to fix, not mail to lose.

Not caught here: ``Transient`` (a dependency is down: retried later, as before) and anything outside
the stage's own analysis (publishing, the trace store); broken bus frames stay the runtime's business.

Stages call ``fault(stage, envelope, exc)`` in an ``except Exception`` around their analysis, and
``error_event`` for the trace.
"""

from __future__ import annotations

import logging

from prometheus_client import Counter

from mailmoat_platform.models import Envelope, TraceEvent

log = logging.getLogger(__name__)

STAGE_ERRORS = Counter(
    "mailmoat_stage_errors_total",
    "Messages a filter stage failed on and passed on with an error verdict, by service and error type.",
    ["service", "error"],
)
MESSAGE_LIMIT = 500
"""Longest error message kept in a verdict (the rest is in the log)."""


def error_detail(exc: BaseException) -> dict[str, str]:
    """``{"error": "Type: message", "error_type": ..., "error_message": ...}``, printable and bounded."""
    kind = type(exc).__name__
    text = " ".join(str(exc).split())
    text = "".join(c if c.isprintable() else "?" for c in text)[:MESSAGE_LIMIT]
    return {"error": f"{kind}: {text}" if text else kind, "error_type": kind, "error_message": text}


def error_token(detail: dict[str, object]) -> str:
    """The error type as a report header token: ASCII letters, digits and ``_`` only."""
    return "".join(c for c in str(detail.get("error_type", "")) if c.isascii() and (c.isalnum() or c == "_")) or "Error"


def fault(stage: str, envelope: Envelope, exc: BaseException) -> dict[str, str]:
    """Log and count a stage's unexpected error on ``envelope``; its ``error_detail``."""
    detail = error_detail(exc)
    log.error("%s: unexpected error on %s, passed on with an error verdict: %s", stage, envelope.id,
              detail["error"], exc_info=exc, extra={"message_id": envelope.id})
    STAGE_ERRORS.labels(stage, detail["error_type"]).inc()
    return detail


def error_event(stage: str, envelope: Envelope, result: str, detail: dict[str, object], action: str) -> TraceEvent:
    """The ``ERROR`` trace event: what failed, and what the message goes on as."""
    return TraceEvent(
        event="ERROR", message_id=envelope.id, service=stage, recipients=envelope.rcpt_to,
        detail=f"{stage} failed on this message ({detail['error']}); passed on as {result} ({action})",
        data={"result": result, **detail},
    )


__all__ = ["STAGE_ERRORS", "error_detail", "error_event", "error_token", "fault"]
