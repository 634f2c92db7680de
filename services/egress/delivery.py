"""SMTP delivery on aiosmtplib: hosts in order with fallback, pooled sessions, one reply per recipient.

A destination is (host, port, TLS mode, TLS name). Idle sessions are kept per destination and closed
after ``idle_timeout``; one idle for longer than ``check_after`` is checked with RSET before reuse
(a session released moments ago ended its last transaction with a final reply, and a reused session
that turns out broken before DATA is replaced by a fresh one anyway). At most ``max_per_destination``
sessions to one destination exist at a time (20, as Postfix's default destination concurrency).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import aiosmtplib
from aiosmtplib import SMTP, SMTPResponse, SMTPStatus
from aiosmtplib.errors import SMTPException, SMTPHeloError, SMTPResponseException

from mailmoat_egress.dane import DaneCheck, check_chain, peer_chain
from mailmoat_egress.pipelining import Exchange, can_pipeline, envelope_commands, pipelined_transaction, positive
from mailmoat_egress.tls import STS_TESTING, connect_kwargs, rule_for, server_name
from mailmoat_mail.addresses import sendable

log = logging.getLogger(__name__)

ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?=\s|$)")
SessionError = (SMTPException, OSError, TimeoutError)


@dataclass(frozen=True)
class Target:
    """One host to try: ``host`` is what is connected to (name or address), ``name`` names it
    (MX host name; certificate name under ``verify`` unless the route gives one)."""

    host: str
    port: int
    name: str = ""
    dane: DaneCheck | None = None
    """The host's TLSA records (DANE, RFC 7672): TLS must match them; None: the route's TLS mode."""

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
    tls: str | None = None
    """TLS version of the session that gave the reply; None in clear text or without a session."""
    tls_failure: str | None = None
    """Why the certificate did not verify, for a session that went on over unverified TLS (MTA-STS
    ``testing``, ``sts-testing`` TLS mode); None otherwise."""

    @property
    def ok(self) -> bool:
        return positive(self.code)

    @property
    def permanent(self) -> bool:
        return 500 <= self.code < 600

    @property
    def temporary(self) -> bool:
        """Neither delivered nor refused for good: a 4xx, or a code no SMTP reply has."""
        return not (self.ok or self.permanent)

    @property
    def reply(self) -> str:
        text = self.text
        if self.enhanced and not text.startswith(self.enhanced):
            text = f"{self.enhanced} {text}"
        return f"{self.code} {text}".strip()


def split_reply(code: int, message: str) -> tuple[str, str]:
    """(enhanced status, text) of a reply; the enhanced status derived from the code when absent.
    In a multi-line reply the status each line repeats (RFC 3463 section 2) is kept once."""
    lines = [line.strip() for line in message.splitlines()]
    match = ENHANCED.match(lines[0]) if lines else None
    if match and match.group(1) == str(code)[0]:
        status = match.group(0)
        text = " ".join(line[len(status):].strip() if line.startswith(status) else line for line in lines)
        return status, text.strip()
    klass = str(code)[0] if code else "4"
    return f"{klass}.0.0", " ".join(lines).strip()


def refusal(command: str, code: int, message: str) -> tuple[int, str]:
    """What a reply that did not take ``command`` means for a recipient: a 4xx or 5xx as it is; any other
    (a 2xx or 3xx where 354 was due, a 1xx, 3xx or 6xx and up anywhere: no answer a server may give
    there) ``451 4.5.0``, a temporary failure: the message is tried again, never counted delivered."""
    if 400 <= code < 600:
        return code, message
    return 451, f"4.5.0 unexpected reply to {command}: {code} {' '.join(message.split())}".rstrip()


def make_result(recipient: str, code: int, message: str, remote: str = "", tls: str | None = None) -> RcptResult:
    enhanced, text = split_reply(code, message)
    return RcptResult(recipient, code, enhanced, text, remote, tls)


class HostFailed(Exception):
    """This host could not take the message; try the next one. ``code``/``message`` describe why."""

    def __init__(self, code: int, message: str, *, permanent: bool = False, tls_failure: bool = False):
        super().__init__(message)
        self.code = code
        self.message = message
        self.permanent = permanent
        self.tls_failure = tls_failure


class SessionBroken(Exception):
    """The session failed before a final reply; ``committed`` when the message data was already sent."""

    def __init__(self, message: str, committed: bool):
        super().__init__(message)
        self.message = message
        self.committed = committed


@dataclass(frozen=True)
class Destination:
    """The pool key: sessions are shared only between deliveries that agree on all of it."""

    host: str
    port: int
    tls: str
    tls_name: str
    """The name the TLS handshake uses (SNI; checked under ``verify``)."""
    source_address: str | None = None
    """Local address the connection is bound to (``outbound.source_address``, ``per_route``); None: any."""
    helo: str | None = None
    """Name to greet with; None: the pool's ``local_hostname`` (``organization.hostname``)."""
    dane: DaneCheck | None = None
    """TLSA records the server's certificate chain must match (``dane`` TLS mode)."""


def destination_for(target: Target, tls: str, tls_name: str | None, source_address: str | None = None,
                    helo: str | None = None) -> Destination:
    """The pool key of ``target``; a target under DANE replaces the route's TLS mode and name with its
    own (TLS that matches its TLSA records, SNI the MX host)."""
    if target.dane is not None:
        tls, tls_name = target.dane.tls_mode, target.label
    return Destination(target.host, target.port, tls, server_name(tls, target.label, tls_name), source_address, helo,
                       target.dane)


@dataclass
class Session:
    smtp: SMTP
    destination: Destination
    remote: str
    tls_version: str | None
    last_used: float = field(default_factory=time.monotonic)
    transactions: int = 0
    tls_failure: str | None = None
    """Set when the session is over unverified TLS because verification failed (``sts-testing``)."""

    @property
    def encrypted(self) -> bool:
        return self.tls_version is not None


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

    def __init__(self, *, local_hostname: str, cafile: str | None = None, max_per_destination: int = 20,
                 idle_timeout: float = 60.0, check_after: float = 2.0):
        self.local_hostname = local_hostname
        self.cafile = cafile
        self.max_per_destination = max_per_destination
        self.idle_timeout = idle_timeout
        self.check_after = check_after
        self._idle: dict[Destination, list[Session]] = {}
        self._limits: dict[Destination, asyncio.Semaphore] = {}
        self.opened = 0
        self.reused = 0

    def limit(self, destination: Destination) -> asyncio.Semaphore:
        sem = self._limits.get(destination)
        if sem is None:
            sem = self._limits[destination] = asyncio.Semaphore(self.max_per_destination)
        return sem

    def idle_count(self, destination: Destination | None = None) -> int:
        if destination is not None:
            return len(self._idle.get(destination, []))
        return sum(len(group) for group in self._idle.values())

    async def acquire(self, destination: Destination, target: Target, timeouts: Timeouts, *,
                      fresh: bool = False) -> Session:
        """An idle session (checked with RSET when idle longer than ``check_after``), or a new one
        (``fresh``: always new; raises HostFailed)."""
        await self.reap()
        idle = self._idle.get(destination, [])
        while idle and not fresh:
            session = idle.pop()
            if not session.smtp.is_connected:
                _close(session.smtp)
                continue
            if time.monotonic() - session.last_used > self.check_after:
                try:
                    await session.smtp.rset(timeout=timeouts.command)
                except SessionError:
                    _close(session.smtp)
                    continue
            self.reused += 1
            return session
        try:
            session = await self._open(destination, target, timeouts)
        except HostFailed as exc:
            if not (exc.tls_failure and rule_for(destination.tls).starttls == "if_offered"):
                raise
            if destination.tls == STS_TESTING:
                log.info("TLS with %s does not verify (%s); MTA-STS testing: continuing without verification",
                         target.label, exc.message)
                session = await self.acquire(replace(destination, tls="opportunistic"), target, timeouts, fresh=True)
                session.destination, session.tls_failure = destination, exc.message
                return session
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

    async def reap(self) -> None:
        """QUIT and close sessions idle longer than the idle timeout."""
        now = time.monotonic()
        expired: list[Session] = []
        for destination, sessions in list(self._idle.items()):
            keep = []
            for session in sessions:
                if now - session.last_used > self.idle_timeout or not session.smtp.is_connected:
                    expired.append(session)
                else:
                    keep.append(session)
            if keep:
                self._idle[destination] = keep
            else:
                del self._idle[destination]
        await _quit_all(expired)

    async def close(self) -> None:
        """QUIT and close every idle session."""
        sessions = [s for group in self._idle.values() for s in group]
        self._idle.clear()
        await _quit_all(sessions)

    async def _open(self, destination: Destination, target: Target, timeouts: Timeouts, *,
                    clear: bool = False) -> Session:
        rule = rule_for(destination.tls)
        if destination.dane is not None and destination.dane.error:
            raise HostFailed(421, f"4.7.5 {target.label}: {destination.dane.error}", tls_failure=True)
        smtp = SMTP(
            hostname=target.host, port=target.port, local_hostname=destination.helo or self.local_hostname,
            timeout=timeouts.command, **connect_kwargs(destination.tls, self.cafile),
            source_address=(destination.source_address, 0) if destination.source_address else None,
        )
        try:
            await smtp.connect(timeout=timeouts.connect)
        except SMTPResponseException as exc:
            _close(smtp)
            enhanced, text = split_reply(exc.code, exc.message)
            raise HostFailed(exc.code, f"{enhanced} {target.label} answered the connection with {exc.code} {text}",
                             permanent=500 <= exc.code < 600) from exc
        except SessionError as exc:
            _close(smtp)
            raise HostFailed(421, f"4.4.1 cannot connect to {target.label}:{target.port}: {exc}") from exc
        remote = target.label
        tls_version: str | None = None
        try:
            await _hello(smtp, timeouts)
            if rule.starttls != "never" and not clear and smtp.supports_extension("starttls"):
                tls_version = await _starttls(smtp, destination, remote, timeouts, must=rule.starttls == "must")
            if rule.starttls == "must" and tls_version is None:
                raise HostFailed(421, f"4.7.4 TLS is required, but was not offered by {remote}")
            if destination.dane is not None and destination.dane.records:
                mismatch = check_chain(destination.dane.records, peer_chain(smtp.get_transport_info("ssl_object")),
                                       destination.dane.names)
                if mismatch:
                    raise HostFailed(421, f"4.7.5 TLS with {remote} failed DANE: {mismatch}", tls_failure=True)
        except HostFailed:
            _close(smtp)
            raise
        except ssl.SSLError as exc:
            _close(smtp)
            raise HostFailed(421, f"4.7.5 TLS with {remote} failed: {exc}", tls_failure=True) from exc
        except SMTPResponseException as exc:
            _close(smtp)
            raise HostFailed(421, f"4.4.2 {remote} refused the session: {exc.code} {exc.message}") from exc
        except SessionError as exc:
            _close(smtp)
            cause = exc.__cause__ or exc.__context__
            if tls_version is None and isinstance(cause, ssl.SSLError):
                raise HostFailed(421, f"4.7.5 TLS with {remote} failed: {cause}", tls_failure=True) from exc
            raise HostFailed(421, f"4.4.2 session with {remote} failed: {exc}") from exc
        return Session(smtp, destination, remote, tls_version)


async def _hello(smtp: SMTP, timeouts: Timeouts) -> None:
    """EHLO, or HELO when the server refuses EHLO (then no extension, hence no STARTTLS, is known)."""
    try:
        await smtp.ehlo(timeout=timeouts.command)
    except SMTPHeloError as exc:
        if exc.code < 500 or not smtp.is_connected:
            raise
        await smtp.helo(timeout=timeouts.command)


async def _starttls(smtp: SMTP, destination: Destination, remote: str, timeouts: Timeouts, *,
                    must: bool) -> str | None:
    """STARTTLS and EHLO again; the TLS version, or None when the server refused the command and
    clear text is allowed. Raises HostFailed when it is not, ``ssl.SSLError`` on a failed handshake."""
    try:
        await smtp.starttls(server_hostname=destination.tls_name, timeout=timeouts.command)
    except SMTPResponseException as exc:
        if must:
            raise HostFailed(421, f"4.7.4 {remote} refused STARTTLS: {exc.code} {exc.message}") from exc
        log.info("%s refused STARTTLS (%s %s), continuing in clear text", remote, exc.code, exc.message)
        return None
    ssl_object = smtp.get_transport_info("ssl_object")
    if ssl_object is None:
        raise HostFailed(421, f"4.7.5 TLS with {remote} did not start", tls_failure=True)
    await smtp.ehlo(timeout=timeouts.command)
    return str(ssl_object.version() or "TLS")


def _close(smtp: SMTP) -> None:
    with contextlib.suppress(Exception):
        smtp.close()


async def _quit_all(sessions: list[Session], timeout: float = 2.0) -> None:
    async def quit_one(session: Session) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(session.smtp.quit(), timeout)
        _close(session.smtp)

    if sessions:
        await asyncio.gather(*(quit_one(s) for s in sessions))


def header_section(data: bytes) -> bytes:
    end = data.find(b"\r\n\r\n")
    return data if end == -1 else data[:end]


def utf8_required(message: Message) -> str | None:
    """Why the message cannot go without SMTPUTF8 (the RFC 6531 status to use), or None when it can."""
    if not (message.mail_from.isascii() and all(r.isascii() for r in message.recipients)):
        return "5.6.7"
    if message.smtputf8 and not header_section(message.data).isascii():
        return "5.6.9"
    return None


async def transact(session: Session, message: Message, timeouts: Timeouts) -> list[RcptResult]:
    """MAIL, RCPT per recipient, DATA on an open session; a reply for every recipient.

    Raises ``SessionBroken`` when the session fails before a final answer.
    """
    smtp, remote, tls = session.smtp, session.remote, session.tls_version
    session.transactions += 1

    def result(recipient: str, code: int, text: str) -> RcptResult:
        return make_result(recipient, code, text, remote, tls)

    options: list[str] = []
    if smtp.supports_extension("size"):
        options.append(f"SIZE={len(message.data)}")
    if message.body_type and message.body_type.upper() == "8BITMIME" and smtp.supports_extension("8bitmime"):
        options.append("BODY=8BITMIME")
    encoding = "ascii"
    if message.smtputf8 or utf8_required(message):
        if smtp.supports_extension("smtputf8"):
            options.append("SMTPUTF8")
            encoding = "utf-8"
        elif status := utf8_required(message):
            text = f"{status} SMTPUTF8 is required, but was not offered by {remote}"
            return [make_result(r, 554, text, remote, tls) for r in message.recipients]
    if can_pipeline(smtp) and crlf_only(message.data):
        return await _pipelined(session, message, options, encoding, timeouts)
    committed = False
    try:
        try:
            await smtp.mail(message.mail_from, options=options, encoding=encoding, timeout=timeouts.command)
        except aiosmtplib.SMTPSenderRefused as exc:
            if exc.code == 421 and session.transactions > 1:
                # A reused session the server is closing (it was not checked with RSET): reopen.
                raise SessionBroken(f"4.4.2 {remote} closed the session: {exc.code} {exc.message}", False) from exc
            if not positive(exc.code):  # aiosmtplib takes only 250
                await _rset(smtp, timeouts)
                return [result(r, *refusal("MAIL", exc.code, exc.message)) for r in message.recipients]
        results: dict[str, RcptResult] = {}
        accepted: list[str] = []
        for recipient in message.recipients:
            try:
                response = await smtp.rcpt(recipient, encoding=encoding, timeout=timeouts.command)
            except aiosmtplib.SMTPRecipientRefused as exc:
                if not positive(exc.code):  # aiosmtplib takes only 250 and 251
                    results[recipient] = result(recipient, *refusal("RCPT", exc.code, exc.message))
                    continue
                response = SMTPResponse(exc.code, exc.message)
            accepted.append(recipient)
            results[recipient] = result(recipient, response.code, response.message)
        if not accepted:
            await _rset(smtp, timeouts)
            return [results[r] for r in message.recipients]
        committed = True
        try:
            response = await send_data(smtp, message.data, timeouts.command)
        except aiosmtplib.SMTPDataError as exc:
            await _rset(smtp, timeouts)
            command = getattr(exc, "command", "DATA")
            taken = command == END_OF_DATA and positive(exc.code)
            reply = (exc.code, exc.message) if taken else refusal(command, exc.code, exc.message)
            for recipient in accepted:
                results[recipient] = result(recipient, *reply)
        else:
            for recipient in accepted:
                results[recipient] = result(recipient, response.code, response.message)
        return [results[r] for r in message.recipients]
    except SessionError as exc:
        raise SessionBroken(f"4.4.2 connection to {remote} broke: {exc or type(exc).__name__}", committed) from exc


async def _pipelined(session: Session, message: Message, options: list[str], encoding: str,
                     timeouts: Timeouts) -> list[RcptResult]:
    """``transact`` with PIPELINING: MAIL, RCPTs and DATA in one write, then the content."""
    smtp, remote, tls = session.smtp, session.remote, session.tls_version

    def result(recipient: str, code: int, text: str) -> RcptResult:
        return make_result(recipient, code, text, remote, tls)

    commands = envelope_commands(message.mail_from, options, message.recipients, encoding)
    exchange = Exchange()
    try:
        await pipelined_transaction(smtp, commands, dot_stuffed(message.data) + b".\r\n", timeouts.command, exchange)
    except SessionError as exc:
        said = exchange.mail if exchange.mail is not None and exchange.mail.code >= 400 else None
        why = (f"{remote} closed the session: {said.code} {said.message}" if said is not None
               else f"connection to {remote} broke: {exc or type(exc).__name__}")
        raise SessionBroken(f"4.4.2 {why}", exchange.content_sent) from exc
    mail, data = exchange.mail, exchange.data
    assert mail is not None and data is not None
    if not positive(mail.code):
        await _rset(smtp, timeouts)
        return [result(r, *refusal("MAIL", mail.code, mail.message)) for r in message.recipients]
    replies = list(zip(message.recipients, exchange.rcpts, strict=True))
    results = {r: result(r, *((reply.code, reply.message) if positive(reply.code)
                               else refusal("RCPT", reply.code, reply.message))) for r, reply in replies}
    accepted = [r for r, reply in replies if positive(reply.code)]
    if accepted:
        final = exchange.final
        outcome = ((final.code, final.message) if final is not None and positive(final.code)
                   else refusal(END_OF_DATA, final.code, final.message) if final is not None
                   else refusal("DATA", data.code, data.message))
        for recipient in accepted:
            results[recipient] = result(recipient, *outcome)
    if not accepted or exchange.final is None or not positive(exchange.final.code):
        await _rset(smtp, timeouts)
    return [results[r] for r in message.recipients]


def crlf_only(data: bytes) -> bool:
    """Every CR and LF of ``data`` is part of a CRLF pair, and it ends with one (ingress refuses
    bare CR and LF, so what it accepted is this)."""
    pairs = data.count(b"\r\n")
    return data.count(b"\r") == pairs and data.count(b"\n") == pairs and data.endswith(b"\r\n")


def dot_stuffed(data: bytes) -> bytes:
    """``data`` (CRLF lines) with a dot doubled at the start of every line (RFC 5321 4.5.2)."""
    if data.startswith(b"."):
        data = b"." + data
    return data.replace(b"\n.", b"\n..") if b"\n." in data else data


END_OF_DATA = "end of data"
"""The command a reply to the content answers, in results and errors."""


class DataRefused(aiosmtplib.SMTPDataError):
    """A reply other than 354 to DATA (``command`` "DATA") or 250 to the content (``END_OF_DATA``)."""

    def __init__(self, code: int, message: str, command: str):
        super().__init__(code, message)
        self.command = command


async def send_data(smtp: SMTP, data: bytes, timeout: float) -> SMTPResponse:
    """DATA, then the content, as ``SMTP.data`` does, without its two regular-expression passes
    over content that needs none: CRLF-only content is sent as it is, dot-stuffed by a byte scan.
    Anything else (or an aiosmtplib without the protocol parts used here) goes through ``SMTP.data``, whose
    errors do not say which of the two replies they are: a 2xx among them counts as refusing DATA (the
    message is tried again rather than counted delivered). ``DataRefused`` says which it was."""
    protocol = smtp.protocol
    lock = getattr(protocol, "_command_lock", None)
    if lock is None or not hasattr(protocol, "_response_pending") or not crlf_only(data):
        return await smtp.data(data, timeout=timeout)
    payload = dot_stuffed(data) + b".\r\n"
    try:
        async with lock:
            protocol._response_pending = True
            protocol.write(b"DATA\r\n")
            start = await protocol.read_response(timeout=timeout)
            if start.code != SMTPStatus.start_input:
                raise DataRefused(start.code, start.message, "DATA")
            protocol._response_pending = True
            protocol.write(payload)
            response = await protocol.read_response(timeout=timeout)
    except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError):
        smtp.close()
        raise
    if response.code != SMTPStatus.completed:
        raise DataRefused(response.code, response.message, END_OF_DATA)
    return response


async def _rset(smtp: SMTP, timeouts: Timeouts) -> None:
    with contextlib.suppress(*SessionError):
        await smtp.rset(timeout=timeouts.command)


class NotStarted(Exception):
    """The process is stopping and this delivery had not begun a transaction: hand the copy back."""


def unsendable(message: Message) -> dict[str, RcptResult]:
    """Permanent results for the recipients whose copy cannot go on an SMTP command line, by the
    grammar ingress parsed the envelope with (``mailmoat_mail.addresses``): every recipient when the
    sender cannot (``5.1.7``), else each recipient that cannot (``5.1.3``). Empty as a rule: ingress
    refuses such addresses; this keeps a message from elsewhere (an old queue, a rule) from failing
    inside the SMTP client."""
    problem = sendable(message.mail_from, utf8=True)
    if problem is not None:
        return {r: make_result(r, 550, f"5.1.7 the sender address cannot be sent: {problem}")
                for r in message.recipients}
    refused = {}
    for recipient in message.recipients:
        problem = sendable(recipient, utf8=True)
        if problem is not None:
            refused[recipient] = make_result(recipient, 550, f"5.1.3 the recipient address cannot be sent: {problem}")
    return refused


class Deliverer:
    """Delivers one message to the first host of a list that takes it.

    ``stopping`` tells when the process is shutting down: a delivery still waiting for a session then
    raises ``NotStarted`` instead of beginning a transaction (those already running finish).
    """

    def __init__(self, pool: SessionPool, stopping: Callable[[], bool] = lambda: False):
        self.pool = pool
        self.stopping = stopping

    async def deliver(self, targets: list[Target], tls: str, tls_name: str | None, message: Message,
                      timeouts: Timeouts, identity: tuple[str | None, str | None] = (None, None)
                      ) -> list[RcptResult]:
        """Try ``targets`` in order; the next host is tried when one cannot be reached, greets with
        an error, fails TLS or breaks before answering. Every recipient gets a result: permanent
        only when every host refused the session permanently, temporary otherwise. ``identity``:
        the local address to bind to and the name to greet with (None: the defaults)."""
        refused = unsendable(message)
        if refused:
            results = dict(refused)
            rest = [r for r in message.recipients if r not in refused]
            if rest:
                sent = await self.deliver(targets, tls, tls_name, replace(message, recipients=rest), timeouts, identity)
                results.update((result.recipient, result) for result in sent)
            return [results[r] for r in message.recipients]
        if not targets:
            return [make_result(r, 451, "4.4.4 no host to deliver to") for r in message.recipients]
        failures: list[HostFailed] = []
        for target in targets:
            destination = destination_for(target, tls, tls_name, *identity)
            async with self.pool.limit(destination):
                if self.stopping():
                    raise NotStarted(f"stopping before delivering to {target.label}")
                try:
                    return await self._on_host(destination, target, message, timeouts)
                except HostFailed as exc:
                    log.info("delivery to %s:%s failed: %s", target.label, target.port, exc.message)
                    failures.append(exc)
        last = failures[-1]
        if all(f.permanent for f in failures):
            return [make_result(r, last.code, last.message) for r in message.recipients]
        failure = next((f for f in reversed(failures) if not f.permanent), last)
        code = failure.code if 400 <= failure.code < 500 else 451
        return [make_result(r, code, failure.message) for r in message.recipients]

    async def _on_host(self, destination: Destination, target: Target, message: Message,
                       timeouts: Timeouts) -> list[RcptResult]:
        """One host: a pooled session, or a fresh one when a reused session breaks before DATA."""
        for fresh in (False, True):
            session = await self.pool.acquire(destination, target, timeouts, fresh=fresh)
            reused = session.transactions > 0
            try:
                results = await transact(session, message, timeouts)
            except SessionBroken as exc:
                self.pool.discard(session)
                if reused and not exc.committed and not fresh:
                    log.info("reused session with %s broke (%s), opening a new one", session.remote, exc.message)
                    continue
                raise HostFailed(421, exc.message) from exc
            self.pool.release(session)
            if session.tls_failure:
                for result in results:
                    result.tls_failure = session.tls_failure
            return results
        raise AssertionError("unreachable")


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
