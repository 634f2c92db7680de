"""The synthetic end-to-end probe: one message through the gateway, judged by its trace.

``python -m mailmoat_cli.probe`` sends a small message over SMTP to ingress (STARTTLS when
offered) and follows the message's trace in Redis until it shows the message delivered to the next
hop for every recipient, or refused, quarantined, deferred... It prints one line and exits 0 when
the message was delivered within the time allowed, 1 otherwise (a Kubernetes CronJob every minute;
the alert MailmoatProbeFailing fires when no run succeeded for 10 minutes).

Environment: ``MAILMOAT_PROBE_SMTP`` (host:port of ingress), ``MAILMOAT_PROBE_FROM``,
``MAILMOAT_PROBE_TO`` (a mailbox of an accepted domain that accepts mail), ``MAILMOAT_PROBE_TIMEOUT``
(seconds, 45); the trace it reads: ``MAILMOAT_REDIS_URL``, or with ``MAILMOAT_RECORDS=postgresql``
``MAILMOAT_DATABASE_URL`` (what the recorder wrote: a recorder that falls behind fails the probe too).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import smtplib
import ssl
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from email.utils import formatdate

from mailmoat_platform import redisclient
from mailmoat_platform.models import TraceEvent
from mailmoat_platform.settings import Settings
from mailmoat_records.trace import TraceStore

FINAL_FAILURES = frozenset({"REJECT", "QUARANTINE", "FAIL", "DSN", "DEADLETTER"})
QUEUED = re.compile(r"2\.6\.0 (\S+) Queued mail for delivery")


@dataclass(frozen=True)
class Judgement:
    """Where the probe message stands: ``done`` once nothing more will change the outcome."""

    delivered: bool
    done: bool
    reason: str


def judge(events: list[TraceEvent], recipient: str) -> Judgement:
    """Delivered when a DELIVER event names the recipient; failed at once on a refusal, quarantine,
    bounce or dead letter; otherwise still on its way (the last event says where)."""
    for event in events:
        if event.event in FINAL_FAILURES:
            return Judgement(False, True, f"{event.event} by {event.service}: {event.detail}")
        if event.event == "DELIVER" and recipient.lower() in (r.lower() for r in event.recipients):
            return Judgement(True, True, f"delivered: {event.detail}")
    if not events:
        return Judgement(False, False, "no trace yet")
    last = events[-1]
    return Judgement(False, False, f"last seen: {last.event} by {last.service}: {last.detail}")


def message(sender: str, recipient: str, token: str) -> bytes:
    return (
        f"From: mailmoat probe <{sender}>\r\nTo: <{recipient}>\r\nSubject: mailmoat probe {token}\r\n"
        f"Date: {formatdate(localtime=False)}\r\nMessage-ID: <probe-{token}@mailmoat.probe>\r\n"
        "\r\nA synthetic message of the mailmoat probe; it can be deleted.\r\n"
    ).encode()


def send(address: str, sender: str, recipient: str, data: bytes, timeout: float = 30.0) -> str:
    """Send over SMTP (STARTTLS when offered, the certificate not verified: this checks the path, not
    the certificate); the queue id from ingress's 250 reply. Raises on any refusal."""
    host, _, port = address.rpartition(":")
    with smtplib.SMTP(host, int(port), timeout=timeout) as client:
        client.ehlo("probe.mailmoat")
        if client.has_extn("starttls"):
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            client.starttls(context=context)
            client.ehlo("probe.mailmoat")
        client.mail(sender)
        code, reply = client.rcpt(recipient)
        if code != 250:
            raise smtplib.SMTPRecipientsRefused({recipient: (code, reply)})
        code, reply = client.data(data)
        text = reply.decode(errors="replace")
        if code != 250:
            raise smtplib.SMTPDataError(code, text)
    match = QUEUED.search(text)
    if match is None:
        raise ValueError(f"no queue id in the reply {code} {text}")
    return match.group(1)


Events = Callable[[str], Awaitable[list[TraceEvent]]]


@asynccontextmanager
async def trace_events(records: str, redis_url: str, database_url: str) -> AsyncIterator[Events]:
    """A message's events by queue id, from Redis or (``records = postgresql``) PostgreSQL."""
    if records == "postgresql":
        from mailmoat_records import db
        from mailmoat_records.tracedb import TraceReader

        async with db.open_pool(database_url, max_size=1, name="probe", timeout=10) as pool:
            yield TraceReader(pool).events
        return
    client = redisclient.from_url(redis_url, socket_timeout=5, socket_connect_timeout=5)
    try:
        yield TraceStore(client).events
    finally:
        await client.aclose()


async def follow(events: Events, queue_id: str, recipient: str, deadline: float, interval: float = 0.5
                 ) -> Judgement:
    while True:
        judgement = judge(await events(queue_id), recipient)
        if judgement.done or time.monotonic() >= deadline:
            return judgement
        await asyncio.sleep(interval)


async def follow_trace(records: str, redis_url: str, database_url: str, queue_id: str, recipient: str,
                       deadline: float) -> Judgement:
    async with trace_events(records, redis_url, database_url) as events:
        return await follow(events, queue_id, recipient, deadline)


def main() -> int:
    address = os.environ.get("MAILMOAT_PROBE_SMTP", "127.0.0.1:2525")
    sender = os.environ.get("MAILMOAT_PROBE_FROM", "probe@mailmoat.invalid")
    recipient = os.environ["MAILMOAT_PROBE_TO"]
    timeout = float(os.environ.get("MAILMOAT_PROBE_TIMEOUT", "45"))
    redis_url = os.environ.get("MAILMOAT_REDIS_URL", "redis://127.0.0.1:6379/0")
    records = os.environ.get("MAILMOAT_RECORDS", Settings.records)
    database_url = os.environ.get("MAILMOAT_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/mailmoat")
    started = time.monotonic()
    token = uuid.uuid4().hex
    try:
        queue_id = send(address, sender, recipient, message(sender, recipient, token))
    except (OSError, smtplib.SMTPException, ValueError) as exc:
        print(json.dumps({"ok": False, "step": "smtp", "reason": f"{type(exc).__name__}: {exc}"}))
        return 1
    try:
        judgement = asyncio.run(follow_trace(records, redis_url, database_url, queue_id, recipient,
                                             started + timeout))
    except Exception as exc:  # the trace store does not answer
        print(json.dumps({"ok": False, "step": "trace", "id": queue_id, "reason": f"{type(exc).__name__}: {exc}"}))
        return 1
    print(json.dumps({"ok": judgement.delivered, "step": "trace", "id": queue_id, "reason": judgement.reason,
                      "seconds": round(time.monotonic() - started, 3)}))
    return 0 if judgement.delivered else 1


if __name__ == "__main__":
    sys.exit(main())
