"""The SMTP server on aiosmtpd: session protocol, command hooks and the end-of-DATA hand-off.

The session side stays thin: every decision comes from ``checks`` (pure), every byte operation
from ``headers``/``received``; publishing and tracing arrive as injected callables.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiosmtpd.smtp import SMTP, Session, login_always_fail, syntax
from aiosmtpd.smtp import Envelope as SmtpEnvelope
from opentelemetry import trace as otel_trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from mailmoat_ingress import proxy, replies
from mailmoat_ingress.author import check_author
from mailmoat_ingress.certfiles import CertificateFiles
from mailmoat_ingress.checks import (
    MailParams,
    check_client,
    check_content,
    check_mail_size,
    check_parts,
    check_recipient,
    mail_parameters,
    parse_mail_options,
    rcpt_parameters,
    resolve_recipient,
    same_recipient_key,
)
from mailmoat_ingress.connectors import check_mail, peer_tls
from mailmoat_ingress.headers import message_id, strip_gateway_headers
from mailmoat_ingress.metrics import ACCEPT_SECONDS, INGRESS_MESSAGES, PROXY_HEADERS, SMTP_REPLIES, SMTP_SESSIONS
from mailmoat_ingress.received import build_received
from mailmoat_ingress.screen import ConnectionScreen
from mailmoat_ingress.srsrcpt import srs_recipient
from mailmoat_mail import addresses
from mailmoat_platform.bus import Publish, stage_queue
from mailmoat_platform.models import Envelope, TlsInfo, TraceEvent, new_message_id
from mailmoat_platform.telemetry import VERDICTS
from mailmoat_policy import Policy, ProxyProtocol

if TYPE_CHECKING:
    from mailmoat_ingress.greylist import Greylist
    from mailmoat_ingress.ratelimit import RateLimiter, Slot

log = logging.getLogger(__name__)

SERVICE = "ingress"
IDENT = "ESMTP mailmoat"
MAIL_COMMAND_LIMIT = 512 + 26 + 10 + 16
"""RFC 5321 command length plus what SIZE=, SMTPUTF8 and BODY= may add (RFC 1870, 6531, 6152)."""

TraceFn = Callable[..., Awaitable[bool]]
_PROPAGATOR = TraceContextTextMapPropagator()


@dataclass
class SessionContext:
    """What all SMTP sessions of one process share."""

    policy: Callable[[], Policy]
    publish: Callable[[Publish], Awaitable[None]]
    trace: TraceFn
    tls_context: ssl.SSLContext | None = None
    tls_files: CertificateFiles | None = None
    """When set, each new session takes its context from here (reloaded when the files change)."""
    tracer: otel_trace.Tracer | None = None
    timeout: float = 300.0
    limiter: RateLimiter | None = None
    greylist: Greylist | None = None
    proxy_trusted: ProxyProtocol | None = None
    """Load balancers the deployment trusts to send PROXY headers besides the policy's
    (``MAILMOAT_PROXY_TRUSTED_NETWORKS``)."""
    screen: ConnectionScreen | None = None
    """The connection filter at SMTP time (``connection_filter.at_smtp``)."""
    sessions: set[IngressSMTP] = field(default_factory=set)
    background: set[asyncio.Task[Any]] = field(default_factory=set)
    stopping: bool = False

    def spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        """Run ``coro`` in the background, keeping a reference until it is done."""
        task = asyncio.ensure_future(coro)
        self.background.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self.background.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("background task failed: %s: %s", type(error).__name__, error, exc_info=error)


_REPLY_COUNTERS: dict[str, Any] = {}


def count_reply(status: str) -> None:
    """Count a final reply line (``NNN text``; ``NNN-`` continuation lines are not replies)."""
    if len(status) >= 3 and (len(status) == 3 or status[3] == " "):
        code = status[:3]
        counter = _REPLY_COUNTERS.get(code)
        if counter is None:
            counter = _REPLY_COUNTERS[code] = SMTP_REPLIES.labels(code)
        counter.inc()


class Transaction(SmtpEnvelope):
    """aiosmtpd's envelope plus the queue id given at MAIL FROM and the parsed parameters."""

    def __init__(self) -> None:
        super().__init__()
        self.queue_id: str | None = None
        self.params = MailParams()
        self.data_error: str | None = None
        self.connector: str | None = None
        self.recipient_keys: set[str] = set()
        """One key per accepted recipient (``checks.same_recipient_key``): a second RCPT for the same
        mailbox is answered 250 and not added again."""


def peer_address(session: Session) -> tuple[str, int]:
    peer = session.peer
    if isinstance(peer, tuple) and len(peer) >= 2:
        return str(peer[0]), int(peer[1])
    return "", 0


def tls_info(session: Session) -> TlsInfo | None:
    """TLS facts of a session after STARTTLS, None in clear text."""
    extra = session.ssl
    if not extra:
        return None
    obj = extra.get("ssl_object")
    cipher = extra.get("cipher")
    peercert = extra.get("peercert") or {}
    subject = ",".join(
        f"{key}={value}" for rdn in peercert.get("subject", ()) for key, value in rdn
    ) or None
    return TlsInfo(
        version=obj.version() if obj is not None else None,
        cipher=cipher[0] if cipher else None,
        peer_cert_subject=subject,
    )


class IngressHandler:
    """aiosmtpd hooks: every SMTP-time decision, REJECT traces, and the publish at end of DATA."""

    def __init__(self, ctx: SessionContext):
        self.ctx = ctx
        self.hooks: dict[str, Callable[..., Awaitable[Any]]] = {
            name.removeprefix("handle_"): getattr(self, name)
            for name in dir(self)
            if name.startswith("handle_") and name != "handle_exception"
        }

    # --- greeting ---------------------------------------------------------------------------------

    async def handle_HELO(self, server: SMTP, session: Session, envelope: Transaction, hostname: str) -> str:
        session.host_name = hostname
        return f"250 {server.hostname}"

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Transaction, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        limits = self.ctx.policy().limits
        lines = [
            server.hostname,
            f"SIZE {limits.max_message_size}",
            "8BITMIME",
            "SMTPUTF8",
            "PIPELINING",
            "ENHANCEDSTATUSCODES",
        ]
        if server.tls_context is not None and not server._tls_protocol:
            lines.append("STARTTLS")
        return [f"250-{line}" for line in lines[:-1]] + [f"250 {lines[-1]}"]

    async def handle_NOOP(self, server: SMTP, session: Session, envelope: Transaction, arg: str) -> str:
        return replies.OK

    async def handle_RSET(self, server: SMTP, session: Session, envelope: Transaction) -> str:
        return replies.OK

    async def handle_QUIT(self, server: SMTP, session: Session, envelope: Transaction) -> str:
        return replies.BYE

    async def handle_exception(self, error: Exception) -> str:
        log.error("SMTP session error: %s: %s", type(error).__name__, error, exc_info=error)
        return replies.TEMPORARY

    # --- transaction ------------------------------------------------------------------------------

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Transaction, address: str, mail_options: list[str]
    ) -> str:
        envelope.queue_id = new_message_id()
        params = parse_mail_options(mail_options)
        if params is None:
            return replies.BAD_SIZE_PARAM
        reply = check_mail_size(params.size, self.ctx.policy().limits)
        if reply is None and self.ctx.limiter is not None:
            reply = await self.ctx.limiter.count_message(self.ctx.policy(), peer_address(session)[0])
        if reply is not None:
            self.reject(session, envelope, reply, sender=address)
            return reply
        partner = check_mail(self.ctx.policy(), peer_address(session)[0], address, peer_tls(session.ssl))
        if partner.reply is not None:
            self.reject(session, envelope, partner.reply, sender=address, connector=partner.connector)
            return partner.reply
        if self.ctx.screen is not None:
            self.ctx.screen.warm(self.ctx.policy(), peer_address(session)[0], session.host_name)
        envelope.connector = partner.connector
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        envelope.params = params
        envelope.smtp_utf8 = params.smtputf8
        return replies.MAIL_OK

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Transaction, path: addresses.Path, rcpt_options: list[str]
    ) -> str:
        """A parsed forward path (``IngressSMTP.smtp_RCPT`` refused what does not parse)."""
        client_ip, _ = peer_address(session)
        policy = self.ctx.policy()
        reply, address = resolve_recipient(policy, client_ip, path)
        if reply is not None:
            self.reject(session, envelope, reply, recipients=[address])
            return reply
        bounce = srs_recipient(policy, address)  # a bounce to an SRS address we gave out
        if bounce is not None:
            reply, reversed_to, why = bounce
            if reply is not None:
                log.info("RCPT %s refused: %s", address, why)
                self.reject(session, envelope, reply, recipients=[address])
                return reply
            address = reversed_to
        key = same_recipient_key(policy, address)
        if key in envelope.recipient_keys:  # the same mailbox again: one copy
            return replies.RCPT_OK
        if bounce is not None:  # the hash authorises the relay to the original sender
            reply = replies.TOO_MANY_RECIPIENTS if len(envelope.rcpt_tos) >= policy.limits.max_recipients else None
        else:
            reply = check_recipient(policy, client_ip, address, len(envelope.rcpt_tos))
        if reply is None and self.ctx.limiter is not None:
            reply = await self.ctx.limiter.count_recipient(policy, client_ip)
        if reply is None and self.ctx.greylist is not None:
            reply = await self.ctx.greylist.check(policy, client_ip, envelope.mail_from or "", address)
        if reply is not None:
            self.reject(session, envelope, reply, recipients=[address])
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        envelope.recipient_keys.add(key)
        return replies.RCPT_OK

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Transaction) -> str:
        started = time.perf_counter()
        policy = self.ctx.policy()
        content = envelope.original_content or b""
        reply = envelope.data_error or check_content(content, policy.limits)
        reply = reply or check_author(content, policy, peer_address(session)[0])
        reply = reply or await check_parts(content, policy.limits)
        if reply is not None:
            INGRESS_MESSAGES.labels("rejected").inc()
            self.reject(session, envelope, reply, recipients=list(envelope.rcpt_tos))
            return reply
        client_ip, client_port = peer_address(session)
        message = Envelope(
            id=envelope.queue_id or new_message_id(),
            client_ip=client_ip,
            client_port=client_port,
            helo=session.host_name,
            tls=tls_info(session),
            mail_from=envelope_sender(envelope.mail_from),
            rcpt_to=list(envelope.rcpt_tos),
            smtputf8=bool(envelope.smtp_utf8),
            body_type=envelope.params.body,
            message_id_header=message_id(content),
            inbound_connector=envelope.connector,
            direction="outbound" if policy.is_internal(client_ip) else "inbound",
            itinerary=policy.pipeline.itinerary(),
        )
        received = build_received(
            helo=session.host_name,
            client_hostname=message.client_hostname,
            client_ip=client_ip,
            by_host=policy.organization.hostname,
            queue_id=message.id,
            recipients=message.rcpt_to,
            at=message.received_at,
            esmtp=session.extended_smtp,
            tls=message.tls,
            smtputf8=message.smtputf8,
        )
        data = received + strip_gateway_headers(content)
        message.size = len(data)
        event = TraceEvent(  # made first: its time is the message's arrival, before the connection filter's event
            event="RECEIVE", message_id=message.id, service=SERVICE, recipients=message.rcpt_to,
            detail=f"from {client_ip} size {message.size}",
            data={"helo": message.helo, "tls": message.tls is not None, "direction": message.direction,
                  "connector": message.inbound_connector},
        )
        screened = await self.ctx.screen.screen(policy, message, data) if self.ctx.screen is not None else None
        if screened is not None:
            VERDICTS.labels("connection_filter", message.verdicts["connection_filter"].result).inc()
            if screened.reply is not None:
                INGRESS_MESSAGES.labels("rejected").inc()
                self.ctx.spawn(self.ctx.trace(screened.event))
                self.reject(session, envelope, screened.reply, recipients=list(envelope.rcpt_tos))
                return screened.reply
        publish = screened.publish if screened is not None and screened.publish is not None \
            else Publish(stage_queue(message.itinerary[0]), message, data)
        headers: dict[str, Any] = {}
        span = None
        if self.ctx.tracer is not None:
            # The message's trace starts here and covers the publish; its context travels in AMQP headers.
            span = self.ctx.tracer.start_span(
                "smtp receive", kind=SpanKind.SERVER, attributes={"messaging.message.id": message.id}
            )
            _PROPAGATOR.inject(headers, context=otel_trace.set_span_in_context(span))
        traced = self.ctx.spawn(
            self.ctx.trace(
                event, sender=message.mail_from, recipients=message.rcpt_to,
                message_id_header=message.message_id_header, client_ip=client_ip,
            )
        )
        if screened is not None:  # recorded beside RECEIVE (one trace publish for both)
            self.ctx.spawn(self.ctx.trace(screened.event))
        publish.headers = headers
        try:
            await self.ctx.publish(publish)
        except Exception as exc:  # broker down, nack, timeout: the client keeps the message and retries
            log.warning("publish of %s failed: %s: %s", message.id, type(exc).__name__, exc,
                        extra={"message_id": message.id})
            if span is not None:
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                span.end()
            INGRESS_MESSAGES.labels("deferred").inc()
            failed = TraceEvent(
                event="REJECT", message_id=message.id, service=SERVICE, recipients=message.rcpt_to,
                detail=f"{replies.TEMPORARY} (queueing failed: {type(exc).__name__})",
            )
            self.ctx.spawn(_after(traced, self.ctx.trace(failed)))
            return replies.TEMPORARY
        if span is not None:
            span.end()
        INGRESS_MESSAGES.labels("accepted").inc()
        ACCEPT_SECONDS.observe(time.perf_counter() - started)
        return replies.queued(message.id)

    def reject(
        self,
        session: Session,
        envelope: Transaction,
        reply: str,
        *,
        sender: str | None = None,
        recipients: list[str] | None = None,
        connector: str | None = None,
    ) -> None:
        """Trace an SMTP-time refusal (in the background: a trace store outage never blocks mail)."""
        client_ip, _ = peer_address(session)
        queue_id = envelope.queue_id or new_message_id()
        envelope.queue_id = queue_id
        from_address = sender if sender is not None else envelope.mail_from
        shown = [printable(r) for r in recipients or []]
        helo = printable(session.host_name) if session.host_name is not None else None
        event = TraceEvent(
            event="REJECT", message_id=queue_id, service=SERVICE, recipients=shown,
            detail=reply, data={"client_ip": client_ip, "helo": helo},
        )
        if connector is not None:
            event.data["connector"] = connector
        self.ctx.spawn(
            self.ctx.trace(
                event,
                sender=printable(envelope_sender(from_address)) if from_address is not None else None,
                recipients=shown,
                client_ip=client_ip,
            )
        )


def printable(text: str) -> str:
    """``text`` as valid UTF-8 for logs and traces: bytes that were not UTF-8 (aiosmtpd keeps them as
    surrogate escapes) shown as ``\\xNN``."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return text


def bad_text(text: str) -> str | None:
    """Why a command argument cannot be kept (not UTF-8, or control characters), or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "not valid UTF-8"
    if any(c < " " or c == "\x7f" for c in text):
        return "not printable text"
    return None


def envelope_sender(address: str | None) -> str:
    """The envelope sender as the Envelope model keeps it (``""`` for the null sender)."""
    if not address or address == "<>":
        return ""
    return address


async def _after(first: Awaitable[Any], then: Awaitable[Any]) -> None:
    try:
        await first
    finally:
        await then


class IngressSMTP(SMTP):
    """aiosmtpd's SMTP with a per-process session registry, a command budget and its own DATA reader."""

    def __init__(self, ctx: SessionContext, handler: IngressHandler, loop: asyncio.AbstractEventLoop):
        """Set up what ``SMTP.__init__`` sets, from tables computed once per handler.

        aiosmtpd introspects the handler and the class with ``inspect`` on every connection; for a
        server that takes one message per connection that is a large share of the work.
        ``tests/unit/test_ingress_session.py`` checks the attributes against aiosmtpd's own.
        """
        policy = ctx.policy()
        self.ctx = ctx
        self.commands = 0
        self.busy = False
        self._reply_lines: list[bytes] = []
        self._plain_reply = False
        """The next final reply is the greeting or the HELO/EHLO reply: no enhanced status code (RFC 2034)."""
        self.slot: Slot | None = None
        self._proxied_peer: tuple[str, int] | None = None
        self.line_length_limit = max(2 * policy.limits.max_line_length + 3, 65536)
        self.__ident__ = IDENT
        self.loop = loop
        asyncio.StreamReaderProtocol.__init__(
            self,
            proxy.GuardedReader(loop=loop, limit=self.line_length_limit),
            client_connected_cb=self._cb_client_connected,
            loop=loop,
        )
        self.event_handler = handler
        self.data_size_limit = None
        self.enable_SMTPUTF8 = True
        self._decode_data = False
        self.command_size_limits = _command_limits()
        self.hostname = policy.organization.hostname
        self.tls_context = ctx.tls_files.context() if ctx.tls_files is not None else ctx.tls_context
        self.require_starttls = False
        self._timeout_duration = ctx.timeout
        self._timeout_handle = None
        self._tls_handshake_okay = True
        self._tls_protocol = None
        self._original_transport = None
        self.session = None
        self.envelope = None
        self.transport = None
        self._handler_coroutine = None
        self._auth_require_tls = True
        self._proxy_timeout = None
        self._authenticator = None
        self._auth_callback = login_always_fail
        self._auth_required = False
        self._auth_methods = {}
        self._handle_hooks = handler.hooks
        self._ehlo_hook_ver = "new"
        self._smtp_methods = {name: _Budgeted(self, getattr(self, attr)) for name, attr in _COMMANDS}
        self._enforce_call_limit = False

    def _create_envelope(self) -> Transaction:
        return Transaction()

    async def _handle_client(self) -> None:
        """Take a trusted balancer's PROXY header, then refuse a client on the IP block list or over
        the connection limit instead of greeting it (traced, then closed)."""
        assert self.session is not None
        policy = self.ctx.policy()
        if not await self._proxy_header(policy):
            self.close()
            return
        client_ip, _ = peer_address(self.session)
        reply = check_client(policy, client_ip)
        if reply is None and self.ctx.limiter is not None:
            reply, self.slot = await self.ctx.limiter.open_connection(policy, client_ip)
            if self.transport is None:  # the client left during the check
                self._release_slot()
                return
        if reply is None:
            assert isinstance(self._reader, proxy.GuardedReader)
            self._reader.guard = True
            self._plain_reply = True  # the greeting
            await super()._handle_client()
            return
        assert isinstance(self.envelope, Transaction)
        self.event_handler.reject(self.session, self.envelope, reply)
        await self.push(reply)
        self.close()

    async def _proxy_header(self, policy: Policy) -> bool:
        """From a trusted peer: read the PROXY header and make its source the session's peer."""
        assert self.session is not None
        settings = policy.connection_filter.proxy_protocol
        peer = peer_address(self.session)
        extra = self.ctx.proxy_trusted
        if not (settings.trusted(peer[0]) or (extra is not None and extra.trusted(peer[0]))):
            return True
        data = await proxy.read_header(self._reader, settings.timeout)
        client = proxy.client_from(data, peer)
        if client is None:
            PROXY_HEADERS.labels("dropped").inc()
            log.warning("%s: no valid PROXY header from a trusted peer, dropped: %s", peer[0], data.error)
            return False
        PROXY_HEADERS.labels("accepted").inc()
        self.session.peer = self._proxied_peer = client
        return True

    @syntax("PROXY")
    async def smtp_PROXY(self, arg: str | None) -> None:
        """A PROXY header where none is expected (untrusted peer, or a second one): 421 and close."""
        assert self.session is not None and isinstance(self.envelope, Transaction)
        PROXY_HEADERS.labels("refused").inc()
        self.event_handler.reject(self.session, self.envelope, replies.PROXY_REFUSED)
        await self.push(replies.PROXY_REFUSED)
        self.close()

    async def run_command(self, method: Callable[[str | None], Awaitable[None]], arg: str | None) -> None:
        """Run one command within the session's command budget; during shutdown close when idle."""
        self.commands += 1
        if self.commands > self.ctx.policy().limits.max_commands:
            log.warning("%r: too many commands, closing", self.session.peer if self.session else None)
            await self.push(replies.TOO_MANY_COMMANDS)
            self.close()
            return
        self.busy = True
        try:
            await method(arg)
        finally:
            self.busy = False
        if self.ctx.stopping:
            self.stop_if_idle()

    # --- session registry -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """aiosmtpd starts a new session after STARTTLS, with the transport's peer: keep the proxied one."""
        super().connection_made(transport)
        if self._proxied_peer is not None and self.session is not None:
            self.session.peer = self._proxied_peer

    def _release_slot(self) -> None:
        if self.slot is not None and self.ctx.limiter is not None:
            self.ctx.spawn(self.ctx.limiter.close_connection(self.slot))
        self.slot = None

    def connection_lost(self, error: Exception | None) -> None:
        self._release_slot()
        if self in self.ctx.sessions:
            self.ctx.sessions.discard(self)
            SMTP_SESSIONS.dec()
        super().connection_lost(error)
        if self._handler_coroutine is not None:
            self._handler_coroutine.add_done_callback(self._unlink)

    def _unlink(self, task: asyncio.Future[Any]) -> None:
        """Drop the references that tie an ended session into cycles (its command table, its task
        with the CancelledError that ended it), so reference counting frees it at once instead of
        the cyclic garbage collector."""
        self._smtp_methods = {}
        self._handler_coroutine = None
        self._client_connected_cb = None
        self._writer = None

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def idle(self) -> bool:
        return not self.busy and (self.envelope is None or not self.envelope.mail_from)

    def stop_if_idle(self) -> bool:
        """During shutdown: say 421 and close when no command or transaction is under way.

        A session already closing (after QUIT, or a TLS session shutting down) is left to finish.
        """
        transport = self.transport
        if transport is None or transport.is_closing():
            return transport is not None
        if not self.idle():
            return False
        count_reply(replies.SHUTTING_DOWN)
        try:
            self._writer.write(replies.SHUTTING_DOWN.encode() + b"\r\n")
        except (OSError, RuntimeError, AttributeError) as exc:  # a transport torn down under us
            log.debug("421 on shutdown not sent: %s", exc)
        self.close()
        return True

    async def push(self, status: str | bytes) -> None:
        """Send a reply line; continuation lines (``NNN-``) wait for the final line, so a multi-line
        reply (EHLO) goes out in one write rather than one per line.

        Every reply but the greeting, the HELO/EHLO reply and 3xx carries an enhanced status code
        (RFC 2034): aiosmtpd's own replies that lack one get the code ``replies.enhanced`` gives.
        """
        if isinstance(status, bytes):
            status = status.decode("utf-8", "surrogateescape")
        final = status[3:4] != "-"
        if self._plain_reply:
            self._plain_reply = not final
        else:
            status = replies.enhanced(status)
        count_reply(status)
        line = status.encode("utf-8", "backslashreplace")
        if not final:
            self._reply_lines.append(line + b"\r\n")
            return
        if self._reply_lines:
            line = b"".join(self._reply_lines) + line
            self._reply_lines.clear()
        self._writer.write(line + b"\r\n")
        await self._writer.drain()

    # --- envelope commands ------------------------------------------------------------------------

    async def _refuse(self, reply: str, **trace: Any) -> None:
        """Refuse a command: log, trace (REJECT) and answer."""
        assert self.session is not None and isinstance(self.envelope, Transaction)
        log.info("%s: refused: %s", peer_address(self.session)[0], reply)
        self.event_handler.reject(self.session, self.envelope, reply, **trace)
        await self.push(reply)

    async def _hello(self, command: str, hostname: str | None) -> bool:
        """Refuse a HELO/EHLO without a usable argument (True when refused)."""
        if not hostname:
            await self.push(f"501 5.5.4 Syntax: {command} hostname")
            return True
        problem = bad_text(hostname)
        if problem is not None:
            await self._refuse(replies.bad_hello(command, problem))
            return True
        self._plain_reply = True
        return False

    @syntax("HELO hostname")
    async def smtp_HELO(self, hostname: str | None) -> None:
        if not await self._hello("HELO", hostname):
            await super().smtp_HELO(hostname)

    @syntax("EHLO hostname")
    async def smtp_EHLO(self, hostname: str | None) -> None:
        if not await self._hello("EHLO", hostname):
            await super().smtp_EHLO(hostname)

    @syntax("MAIL FROM: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_MAIL(self, arg: str | None) -> None:
        """MAIL FROM by ``mailmoat_mail.addresses``: what does not parse is refused here (traced)."""
        if await self.check_helo_needed():
            return
        assert self.session is not None and isinstance(self.envelope, Transaction)
        if self.envelope.mail_from:
            await self.push(replies.NESTED_MAIL)
            return
        rest = self._strip_command_keyword("FROM:", arg) if arg else None
        if rest is None:
            await self._refuse(replies.MAIL_SYNTAX, sender=printable(arg or ""))
            return
        try:
            command = addresses.parse_mail(rest)
        except addresses.AddressError as exc:
            await self._refuse(_address_reply(exc, "MAIL FROM", "sender"), sender=_as_written(rest))
            return
        params = mail_parameters(command.params)
        if not self.session.extended_smtp and command.params:
            params = replies.MAIL_SYNTAX
        if isinstance(params, str):
            await self._refuse(params, sender=command.path.address)
            return
        options = [key if value is None else f"{key}={value}" for key, value in command.params.items()]
        status = await self._call_handler_hook("MAIL", command.path.address or "<>", options)
        await self.push(status)

    @syntax("RCPT TO: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_RCPT(self, arg: str | None) -> None:
        """RCPT TO by ``mailmoat_mail.addresses`` (non-ASCII only after MAIL FROM ... SMTPUTF8)."""
        if await self.check_helo_needed():
            return
        assert self.session is not None and isinstance(self.envelope, Transaction)
        envelope = self.envelope
        if not envelope.mail_from:
            await self.push(replies.NEED_MAIL)
            return
        rest = self._strip_command_keyword("TO:", arg) if arg else None
        if rest is None:
            await self._refuse(replies.RCPT_SYNTAX)
            return
        try:
            command = addresses.parse_rcpt(rest, utf8=bool(envelope.smtp_utf8))
        except addresses.AddressError as exc:
            written = _as_written(rest)
            await self._refuse(_address_reply(exc, "RCPT TO", "recipient"), recipients=[written] if written else [])
            return
        reply = rcpt_parameters(command.params)
        if reply is None and not self.session.extended_smtp and command.params:
            reply = replies.RCPT_SYNTAX
        if reply is not None:
            await self._refuse(reply, recipients=[command.path.address])
            return
        options = [key if value is None else f"{key}={value}" for key, value in command.params.items()]
        status = await self._call_handler_hook("RCPT", command.path, options)
        await self.push(status)

    @syntax("VRFY <address>")
    async def smtp_VRFY(self, arg: str | None) -> None:
        """No address verification (it would disclose the directory): 252 as RFC 5321 3.5.3 allows."""
        if not arg:
            await self.push("501 5.5.4 Syntax: VRFY <address>")
            return
        await self.push("252 2.0.0 Cannot VRFY user, but will accept message and attempt delivery")

    # --- DATA -------------------------------------------------------------------------------------

    @syntax("DATA")
    async def smtp_DATA(self, arg: str | None) -> None:
        """Read the content (dot-unstuffed, bounded), then hand it to the handler's DATA hook.

        Over the size limit or with a line beyond the reader's limit the content is discarded
        while the client finishes sending, and the refusal goes through the same hook (traced).
        """
        if await self.check_helo_needed():
            return
        envelope = self.envelope
        assert isinstance(envelope, Transaction)
        if not envelope.rcpt_tos:
            await self.push("503 5.5.1 Error: need RCPT command")
            return
        if arg:
            await self.push("501 5.5.4 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        limit = self.ctx.policy().limits.max_message_size
        reader = self._reader
        lines: list[bytes] = []
        size = 0
        error: str | None = None
        partial = False
        while self.transport is not None:
            taken = None if partial else take_lines(reader)
            if taken is not None:  # every complete line the reader holds, at once (as read line by line below)
                block, ended = taken
                size += len(block)
                if error is None:
                    if size > limit:
                        error = replies.SIZE_EXCEEDED
                        lines.clear()
                    else:
                        lines.append(unstuff(block))
                if ended:
                    break
                continue
            try:
                line = await reader.readuntil(b"\r\n")
            except asyncio.LimitOverrunError as exc:
                chunk = await reader.read(exc.consumed)
                size += len(chunk)
                partial = True
                error = error or replies.LINE_TOO_LONG
                lines.clear()
                continue
            except asyncio.IncompleteReadError:
                self.close()
                return
            if partial:
                partial = False
                size += len(line)
                continue
            if line == b".\r\n":
                break
            size += len(line)
            if error is None:
                if size > limit:
                    error = replies.SIZE_EXCEEDED
                    lines.clear()
                else:
                    lines.append(line[1:] if line[:1] == b"." else line)
        if self.transport is None:
            return
        envelope.original_content = b"".join(lines)
        envelope.data_error = error
        lines.clear()
        try:
            status = await self._call_handler_hook("DATA")
        except Exception as exc:  # never leak internals, never answer 5xx for our own fault
            log.error("end of DATA failed: %s: %s", type(exc).__name__, exc, exc_info=exc)
            status = replies.TEMPORARY
        finally:
            self._set_post_data_state()
        await self.push(status)


def take_lines(reader: asyncio.StreamReader) -> tuple[bytes, bool] | None:
    """The complete DATA lines ``reader`` holds (at most its limit's worth, each within its line limit), taken
    from its buffer in one piece up to the end-of-data line, and whether that line was among them (it is
    taken too, not returned); None when there is no such line to take now (the caller reads line by line:
    the line limit, the end of input and a reader's error are handled there). ``readuntil(b"\\r\\n")`` line
    after line would return the same bytes."""
    buffer = getattr(reader, "_buffer", None)
    if not buffer or reader.exception() is not None or getattr(reader, "guard", False):
        return None
    if buffer[:3] == b".\r\n":
        block, taken, ended = b"", 3, True
    else:
        last = buffer.rfind(b"\r\n", 0, reader._limit + 2)  # type: ignore[attr-defined]
        if last < 0:
            return None
        end = buffer.find(b"\r\n.\r\n", 0, last + 2)
        if end >= 0:
            block, taken, ended = bytes(buffer[:end + 2]), end + 5, True
        else:
            block, taken, ended = bytes(buffer[:last + 2]), last + 2, False
    del buffer[:taken]
    reader._maybe_resume_transport()  # type: ignore[attr-defined]
    return block, ended


def unstuff(block: bytes) -> bytes:
    """Complete DATA lines without the dot that starts a line beginning with a dot (RFC 5321 4.5.2)."""
    if block[:1] == b".":
        block = block[1:]
    return block.replace(b"\r\n.", b"\r\n")


class _Budgeted:
    """A session's command method behind the command budget; HELP still sees its syntax attributes."""

    __slots__ = ("method", "session")

    def __init__(self, session: IngressSMTP, method: Callable[[str | None], Awaitable[None]]):
        self.session = session
        self.method = method

    def __call__(self, arg: str | None) -> Awaitable[None]:
        return self.session.run_command(self.method, arg)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.method, name)


_COMMANDS = tuple(
    (name.removeprefix("smtp_"), name) for name in dir(IngressSMTP) if name.startswith("smtp_") and name != "smtp_AUTH"
)


def _command_limits() -> collections.defaultdict[str, int]:
    limits: collections.defaultdict[str, int] = collections.defaultdict(lambda: SMTP.command_size_limit)
    limits["MAIL"] = MAIL_COMMAND_LIMIT
    return limits


def _as_written(arg: str) -> str:
    """The address part of a MAIL/RCPT argument that did not parse, for the trace (printable)."""
    text = arg.strip()
    if text.startswith("<"):
        text = text[1:].partition(">")[0]
    return printable(text)


def _address_reply(error: addresses.AddressError, command: str, what: str) -> str:
    """The refusal for a MAIL FROM / RCPT TO argument that does not parse."""
    if error.kind == "utf8":
        return replies.needs_smtputf8(what)
    if error.kind == "param":
        return replies.bad_parameters(command, error.reason)
    return replies.bad_sender(error.reason) if what == "sender" else replies.bad_recipient(error.reason)


class RefuseSession(asyncio.Protocol):
    """A connection over the session cap: 421 and close, nothing read.

    The transport is used by duck typing: uvloop's TCP transport is not an ``asyncio.WriteTransport``
    subclass (an ``isinstance`` check here once made every refusal a silent close under uvloop).
    """

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        try:
            transport.write(replies.TOO_MANY_SESSIONS.encode() + b"\r\n")  # type: ignore[attr-defined]
        except (OSError, RuntimeError) as exc:  # the client left already
            log.debug("421 over the session cap not sent: %s", exc)
        else:
            count_reply(replies.TOO_MANY_SESSIONS)
        transport.close()


def protocol_factory(ctx: SessionContext, loop: asyncio.AbstractEventLoop) -> Callable[[], asyncio.Protocol]:
    """A factory for ``loop.create_server``: one session per connection, up to the policy's cap."""
    handler = IngressHandler(ctx)

    def make() -> asyncio.Protocol:
        if len(ctx.sessions) >= ctx.policy().limits.max_sessions:
            log.warning("session cap reached (%d), refusing a connection", len(ctx.sessions))
            return RefuseSession()
        session = IngressSMTP(ctx, handler, loop)
        ctx.sessions.add(session)
        SMTP_SESSIONS.inc()
        return session

    return make
