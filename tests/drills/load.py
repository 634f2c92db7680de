"""Load for the drills: real SMTP clients sending numbered messages, and the accounting of where each
one ended (delivered, duplicated, bounced, dead-lettered, lost)."""

from __future__ import annotations

import re
import smtplib
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from tests.support.sink import SmtpSink

MESSAGE_ID = re.compile(rb"Message-ID: <(drill-[^>]+)>", re.IGNORECASE)


def message(ident: str, sender: str, rcpt: str) -> bytes:
    return (
        f"From: <{sender}>\r\nTo: <{rcpt}>\r\nSubject: drill {ident}\r\nMessage-ID: <{ident}>\r\n"
        f"Date: Sat, 05 Dec 2026 12:00:00 +0000\r\n\r\nDrill message {ident}.\r\n"
    ).encode()


@dataclass
class Sent:
    ident: str
    rcpt: str
    reply: int
    """The reply to the end of DATA (or to the command that failed); 0: the connection failed."""
    at: float
    took: float = 0.0
    """Seconds from MAIL FROM to that reply (the connection's set-up not included)."""


@dataclass
class Load:
    """``clients`` SMTP clients, each sending one message after another at ``rate`` per second in
    all, new session every ``per_session`` messages, until ``stop()``."""

    port: int
    scenario: str
    rate: float = 20.0
    clients: int = 4
    per_session: int = 10
    sender: str = "drill@example.com"
    recipients: tuple[str, ...] = ("a@example.com", "b@example.com", "c@example.com")
    sent: list[Sent] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)
    _next: int = 0

    def start(self) -> Load:
        self.started = time.monotonic()
        for n in range(self.clients):
            thread = threading.Thread(target=self._client, args=(n,), daemon=True, name=f"drill-client-{n}")
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def _take(self) -> int:
        with self._lock:
            n = self._next
            self._next += 1
            return n

    def _record(self, item: Sent) -> None:
        with self._lock:
            self.sent.append(item)

    def _client(self, index: int) -> None:
        interval = self.clients / self.rate
        due = time.monotonic() + index * interval / self.clients
        smtp: smtplib.SMTP | None = None
        in_session = 0
        while not self._stop.is_set():
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            due = max(due + interval, time.monotonic() - interval)
            n = self._take()
            ident = f"drill-{self.scenario}-{n}@drill.test"
            rcpt = self.recipients[n % len(self.recipients)]
            began = time.monotonic()
            try:
                if smtp is None:
                    smtp = smtplib.SMTP("127.0.0.1", self.port, local_hostname="client.drill.test", timeout=30)
                    smtp.ehlo()
                    in_session = 0
                began = time.monotonic()
                reply = self._send(smtp, ident, rcpt)
                in_session += 1
                if in_session >= self.per_session or reply >= 400:
                    _quit(smtp)
                    smtp = None
            except (OSError, smtplib.SMTPException):
                reply = 0
                _close(smtp)
                smtp = None
            self._record(Sent(ident, rcpt, reply, time.time(), time.monotonic() - began))
        _quit(smtp)

    def _send(self, smtp: smtplib.SMTP, ident: str, rcpt: str) -> int:
        code, _ = smtp.mail(self.sender)
        if code != 250:
            smtp.rset()
            return code
        code, _ = smtp.rcpt(rcpt)
        if code not in (250, 251):
            smtp.rset()
            return code
        code, _ = smtp.data(message(ident, self.sender, rcpt))
        return code


def _quit(smtp: smtplib.SMTP | None) -> None:
    if smtp is not None:
        try:
            smtp.quit()
        except (OSError, smtplib.SMTPException):
            _close(smtp)


def _close(smtp: smtplib.SMTP | None) -> None:
    if smtp is not None:
        try:
            smtp.close()
        except OSError:
            pass


@dataclass
class Tally:
    """Where the messages of one drill ended."""

    sent: int = 0
    accepted: int = 0
    temporary: int = 0
    permanent: int = 0
    failed: int = 0
    delivered: int = 0
    duplicates: int = 0
    bounced: int = 0
    dead: int = 0
    lost: int = 0
    pending: list[str] = field(default_factory=list)


def delivered_ids(sink: SmtpSink) -> Counter[str]:
    """Message-IDs of the drill messages the next hop accepted (DSNs left out), with their counts."""
    with sink.lock:
        items = list(sink.messages)
    return Counter(m.group(1).decode() for r in items if r.mail_from and (m := MESSAGE_ID.search(r.data)))


def bounced_ids(sink: SmtpSink) -> set[str]:
    """Message-IDs named by the DSNs (null sender) the next hop received."""
    with sink.lock:
        items = list(sink.messages)
    return {m.group(1).decode() for r in items if not r.mail_from for m in MESSAGE_ID.finditer(r.data)}


def tally(load: Load, sink: SmtpSink, dead: set[str]) -> Tally:
    with load._lock:
        sent = list(load.sent)
    copies = delivered_ids(sink)
    bounced = bounced_ids(sink)
    result = Tally(sent=len(sent))
    accepted = [s.ident for s in sent if s.reply == 250]
    result.accepted = len(accepted)
    result.temporary = sum(1 for s in sent if 400 <= s.reply < 500)
    result.permanent = sum(1 for s in sent if s.reply >= 500)
    result.failed = sum(1 for s in sent if s.reply == 0)
    result.delivered = sum(1 for i in accepted if copies[i])
    result.duplicates = sum(count - 1 for count in copies.values() if count > 1)
    result.bounced = sum(1 for i in accepted if i in bounced and not copies[i])
    result.dead = sum(1 for i in accepted if i in dead and not copies[i] and i not in bounced)
    result.pending = [i for i in accepted if not copies[i] and i not in bounced and i not in dead]
    result.lost = len(result.pending)
    return result
