"""SMTP delivery on aiosmtplib: hosts in order with fallback, pooled sessions, one reply per recipient.

A destination is (host, port, TLS mode, TLS name). Idle sessions are kept per destination, checked
with RSET before reuse and closed after ``idle_timeout``; at most ``max_per_destination`` sessions
to one destination exist at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl
import time
from dataclasses import dataclass, field

import aiosmtplib
from aiosmtplib import SMTP
from aiosmtplib.errors import SMTPException, SMTPResponseException

from mailmoat_egress.tls import connect_kwargs, rule_for, server_name

log = logging.getLogger(__name__)

ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?=\s|$)")


@dataclass(frozen=True)
class Target:
    """One host to try: ``host`` is what is connected to (name or address), ``name`` names it
    (MX host name; certificate name under ``verify`` unless the route gives one)."""

    host: str
    port: int
    name: str = ""

    @property
    def label(self) -> str:
        return self.name or self.host


@dataclass
class RcptResult:
    """The outcome for one recipient: an SMTP reply, from the remote host or made up locally."""

    recipient: str
    code: int
    enhanced: str
    text: str
    remote_host: str = ""
    """Empty when no server gave this reply (connection, DNS or TLS failure)."""

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 300

    @property
    def permanent(self) -> bool:
        return self.code >= 500

    @property
    def temporary(self) -> bool:
        return 400 <= self.code < 500 or self.code < 200

    @property
    def reply(self) -> str:
        text = self.text
        if self.enhanced and not text.startswith(self.enhanced):
            text = f"{self.enhanced} {text}"
        return f"{self.code} {text}".strip()


def split_reply(code: int, message: str) -> tuple[str, str]:
    """(enhanced status, text) of a reply; the enhanced status derived from the code when absent."""
    message = " ".join(line.strip() for line in message.splitlines()).strip()
    match = ENHANCED.match(message)
    if match:
        return match.group(0), message[match.end():].strip()
    klass = str(code)[0] if code else "4"
    return f"{klass}.0.0", message


def make_result(recipient: str, code: int, message: str, remote: str = "") -> RcptResult:
    enhanced, text = split_reply(code, message)
    return RcptResult(recipient, code, enhanced, text, remote)


class HostFailed(Exception):
    """This host could not take the message; try the next one. ``code``/``message`` describe why."""

    def __init__(self, code: int, message: str, *, permanent: bool = False, tls_failure: bool = False):
        super().__init__(message)
        self.code = code
        self.message = message
        self.permanent = permanent
        self.tls_failure = tls_failure


@dataclass(frozen=True)
class Destination:
    host: str
    port: int
    tls: str
    tls_name: str | None


@dataclass
class Session:
    smtp: SMTP
    destination: Destination
    remote: str
    encrypted: bool
    last_used: float = field(default_factory=time.monotonic)


@dataclass
class Timeouts:
    connect: float = 30.0
    command: float = 120.0


@dataclass
class Message:
    """What one transaction sends."""

    mail_from: str
    recipients: list[str]
    data: bytes
    smtputf8: bool = False
    body_type: str | None = None


class SessionPool:
    """Idle SMTP sessions per destination, with a bound on sessions per destination."""

    def __init__(self, *, local_hostname: str, cafile: str | None = None, max_per_destination: int = 4,
                 idle_timeout: float = 60.0):
        self.local_hostname = local_hostname
        self.cafile = cafile
        self.max_per_destination = max_per_destination
        self.idle_timeout = idle_timeout
        self._idle: dict[Destination, list[Session]] = {}
        self._limits: dict[Destination, asyncio.Semaphore] = {}
        self.opened = 0
        self.reused = 0

    def limit(self, destination: Destination) -> asyncio.Semaphore:
        sem = self._limits.get(destination)
        if sem is None:
            sem = self._limits[destination] = asyncio.Semaphore(self.max_per_destination)
        return sem

    async def acquire(self, destination: Destination, target: Target, timeouts: Timeouts) -> Session:
        """An idle session that still answers RSET, or a new one (raises HostFailed)."""
        self.reap()
        idle = self._idle.get(destination, [])
        while idle:
            session = idle.pop()
            try:
                await session.smtp.rset(timeout=timeouts.command)
            except (SMTPException, OSError, TimeoutError):
                _close(session.smtp)
                continue
            self.reused += 1
            return session
        try:
            session = await self._open(destination, target, timeouts)
        except HostFailed as exc:
            if not (exc.tls_failure and rule_for(destination.tls).starttls == "if_offered"):
                raise
            log.info("TLS with %s failed under opportunistic TLS, continuing in clear text", target.label)
            session = await self._open(destination, target, timeouts, clear=True)
        self.opened += 1
        return session

    def release(self, session: Session) -> None:
        if session.smtp.is_connected:
            session.last_used = time.monotonic()
            self._idle.setdefault(session.destination, []).append(session)

    def discard(self, session: Session) -> None:
        _close(session.smtp)

    def reap(self) -> None:
        """Close sessions idle longer than the idle timeout."""
        now = time.monotonic()
        for destination, sessions in list(self._idle.items()):
            keep = []
            for session in sessions:
                if now - session.last_used > self.idle_timeout or not session.smtp.is_connected:
                    _close(session.smtp)
                else:
                    keep.append(session)
            self._idle[destination] = keep

    async def close(self) -> None:
        """QUIT and close every idle session."""
        sessions = [s for group in self._idle.values() for s in group]
        self._idle.clear()
        for session in sessions:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(session.smtp.quit(), 5)
            _close(session.smtp)

    async def _open(self, destination: Destination, target: Target, timeouts: Timeouts, *,
                    clear: bool = False) -> Session:
        rule = rule_for(destination.tls)
        smtp = SMTP(
            hostname=target.host, port=target.port, local_hostname=self.local_hostname,
            timeout=timeouts.command, **connect_kwargs(destination.tls, self.cafile),
        )
        try:
            await smtp.connect(timeout=timeouts.connect)
        except SMTPResponseException as exc:
            _close(smtp)
            raise HostFailed(exc.code, f"greeting from {target.label}: {exc.message}",
                             permanent=exc.code >= 500) from exc
        except (SMTPException, OSError, TimeoutError) as exc:
            _close(smtp)
            raise HostFailed(421, f"4.4.1 cannot connect to {target.label}:{target.port}: {exc}") from exc
        remote = target.label
        try:
            await smtp.ehlo()
            encrypted = False
            if rule.starttls != "never" and not clear and smtp.supports_extension("starttls"):
                await smtp.starttls(server_hostname=server_name(destination.tls, target.label, destination.tls_name),
                                    timeout=timeouts.command)
                await smtp.ehlo()
                encrypted = smtp.get_transport_info("sslcontext") is not None
            if rule.starttls == "must" and not encrypted:
                raise HostFailed(421, f"4.7.10 {remote} does not offer STARTTLS and the route requires TLS")
        except HostFailed:
            _close(smtp)
            raise
        except (ssl.SSLError, ssl.CertificateError) as exc:
            _close(smtp)
            raise HostFailed(421, f"4.7.5 TLS with {remote} failed: {exc}", tls_failure=True) from exc
        except SMTPResponseException as exc:
            _close(smtp)
            raise HostFailed(421, f"4.4.2 {remote} refused the session: {exc.code} {exc.message}") from exc
        except (SMTPException, OSError, TimeoutError) as exc:
            _close(smtp)
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, ssl.SSLError):
                raise HostFailed(421, f"4.7.5 TLS with {remote} failed: {cause}", tls_failure=True) from exc
            raise HostFailed(421, f"4.4.2 session with {remote} failed: {exc}") from exc
        return Session(smtp, destination, remote, encrypted)


def _close(smtp: SMTP) -> None:
    with contextlib.suppress(Exception):
        smtp.close()


def _needs_utf8(message: Message) -> bool:
    return not (message.mail_from.isascii() and all(r.isascii() for r in message.recipients))


async def transact(session: Session, message: Message, timeouts: Timeouts) -> list[RcptResult]:
    """MAIL, RCPT per recipient, DATA on an open session; a reply for every recipient.

    Raises ``SMTPException``/``OSError`` when the session breaks before a final answer.
    """
    smtp, remote = session.smtp, session.remote
    options: list[str] = []
    if smtp.supports_extension("size"):
        options.append(f"SIZE={len(message.data)}")
    if message.body_type and message.body_type.upper() == "8BITMIME" and smtp.supports_extension("8bitmime"):
        options.append("BODY=8BITMIME")
    encoding = "ascii"
    if message.smtputf8 or _needs_utf8(message):
        if smtp.supports_extension("smtputf8"):
            options.append("SMTPUTF8")
            encoding = "utf-8"
        elif _needs_utf8(message):
            return [make_result(r, 553, "5.6.7 the server does not support SMTPUTF8 (RFC 6531)", remote)
                    for r in message.recipients]
    try:
        await smtp.mail(message.mail_from, options=options, encoding=encoding, timeout=timeouts.command)
    except aiosmtplib.SMTPSenderRefused as exc:
        await _rset(smtp, timeouts)
        return [make_result(r, exc.code, exc.message, remote) for r in message.recipients]
    results: dict[str, RcptResult] = {}
    accepted: list[str] = []
    for recipient in message.recipients:
        try:
            response = await smtp.rcpt(recipient, encoding=encoding, timeout=timeouts.command)
        except aiosmtplib.SMTPRecipientRefused as exc:
            results[recipient] = make_result(recipient, exc.code, exc.message, remote)
        else:
            accepted.append(recipient)
            results[recipient] = make_result(recipient, response.code, response.message, remote)
    if not accepted:
        await _rset(smtp, timeouts)
        return [results[r] for r in message.recipients]
    try:
        response = await smtp.data(message.data, timeout=timeouts.command)
    except aiosmtplib.SMTPDataError as exc:
        await _rset(smtp, timeouts)
        for recipient in accepted:
            results[recipient] = make_result(recipient, exc.code, exc.message, remote)
    else:
        for recipient in accepted:
            results[recipient] = make_result(recipient, response.code, response.message, remote)
    return [results[r] for r in message.recipients]


async def _rset(smtp: SMTP, timeouts: Timeouts) -> None:
    with contextlib.suppress(SMTPException, OSError, TimeoutError):
        await smtp.rset(timeout=timeouts.command)


class Deliverer:
    """Delivers one message to the first host of a list that takes it."""

    def __init__(self, pool: SessionPool):
        self.pool = pool

    async def deliver(self, targets: list[Target], tls: str, tls_name: str | None, message: Message,
                      timeouts: Timeouts) -> list[RcptResult]:
        """Try ``targets`` in order; the next host is tried when one cannot be reached, greets with
        an error, fails TLS or breaks before answering. Every recipient gets a result."""
        if not targets:
            return [make_result(r, 451, "4.4.4 no host to deliver to") for r in message.recipients]
        failure = HostFailed(421, "4.4.1 no host answered")
        for target in targets:
            destination = Destination(target.host, target.port, tls, tls_name)
            async with self.pool.limit(destination):
                try:
                    session = await self.pool.acquire(destination, target, timeouts)
                except HostFailed as exc:
                    log.info("delivery to %s:%s failed: %s", target.label, target.port, exc.message)
                    failure = exc
                    continue
                try:
                    results = await transact(session, message, timeouts)
                except (SMTPException, OSError, TimeoutError) as exc:
                    self.pool.discard(session)
                    failure = HostFailed(421, f"4.4.2 connection to {session.remote} broke: {exc}")
                    continue
                self.pool.release(session)
                return results
        if failure.permanent:
            return [make_result(r, failure.code, failure.message) for r in message.recipients]
        code = failure.code if 400 <= failure.code < 500 else 451
        return [make_result(r, code, failure.message) for r in message.recipients]


def parse_hostport(value: str, default_port: int = 25) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]:port`` → (host, port)."""
    value = value.strip()
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default_port
    if value.count(":") == 1:
        host, port = value.split(":")
        return host, int(port)
    return value, default_port
