"""What every service process shares: connections, policy watch, health/metrics HTTP, the consume loop.

A stage hands ``consume_stage`` a handler ``(envelope, data) -> [Publish, ...]``; the runtime
publishes every output with confirms and only then acks the input (at-least-once). A filter stage's
handler ends with ``finish`` (verdict, report header, size, trace event, the publish to the next stage). A handler that
raises ``Transient`` is retried later without counting towards the poison limit; any other error is
retried until the delivery limit and then dead-lettered with its reason, with a DEADLETTER event.

Every delivery takes one guarded path from its first byte: headers (read tolerantly: a trace context
that is not text is ignored), frame, envelope (one without recipients is dead-lettered at once), the
handler. Whatever raises on the way ends as a retry or, at the delivery limit, a dead letter with its
reason; no delivery stays unacked. Readiness is false while a delivery has been held longer than the
stall bound, a dependency the stage needs (``add_dependency``) does not answer, or one of its ready
checks says no. Background tasks (a pinger, a watcher) run from ``start`` until ``shutdown``; stop hooks
(``on_stop``) let a stage finish its own work (an SMTP listener's sessions) before the connections close.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry.trace import SpanKind
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from mailmoat_mail.headers import delivery_count, queue_wait, republishable
from mailmoat_mail.headers import text as header_text
from mailmoat_platform import colocated, heap
from mailmoat_platform.acks import AckBatcher
from mailmoat_platform.bus import DEAD_QUEUE, Bus, Delivery, FrameError, Publish, stage_queue
from mailmoat_platform.health import Dependency, Held
from mailmoat_platform.models import Envelope, TraceEvent, Verdict
from mailmoat_platform.probehttp import TEXT, Answer, ProbeServer
from mailmoat_platform.settings import Settings
from mailmoat_platform.telemetry import (
    DEPENDENCY_UP,
    IN_FLIGHT,
    MESSAGES,
    OLDEST_UNACKED,
    POLICY_RELOADS,
    PROCESSING,
    QUEUE_WAIT,
    VERDICTS,
    extract,
    inject,
    setup_logging,
    setup_tracing,
    tracing_records,
)
from mailmoat_policy import PolicyHolder
from mailmoat_records.tracebus import TracePublisher, bus_sender

if TYPE_CHECKING:
    from mailmoat_platform import redisclient
    from mailmoat_platform.redisbatch import ScriptBatcher
    from mailmoat_records.trace import TraceStore

log = logging.getLogger(__name__)

Handler = Callable[[Envelope, bytes], Awaitable[list[Publish]]]
ReadyCheck = Callable[[], bool]
Background = Callable[[], Awaitable[None]]
"""Makes the coroutine of a background task (called when the runtime starts)."""

_TRACE_WAITS: contextvars.ContextVar[list[asyncio.Future[bool]] | None] = contextvars.ContextVar(
    "mailmoat_trace_waits", default=None)
"""The trace records a delivery's handler handed over with ``finish``, awaited before the ack (set by
``_handle``): the trace publish and the publish to the next stage are confirmed in the same round trip
instead of one after the other."""

TRACE_LINGER = 0.05
"""Seconds a process's trace publisher waits for more records before a publish (records = postgresql), at
most: a stage acks a delivery only once its trace record is confirmed, and when mail trickles in, a record
per trace message (a publish for the broker, a delivery for the recorder) costs more CPU than the message's
own hop. The wait ends sooner once ``TRACE_FLUSH_SHARE`` of the prefetch is waiting (libs/records/tracebus.py)."""
TRACE_FLUSH_SHARE = 4
"""A trace publish goes out at once when records for a quarter of the prefetch are queued: deliveries waiting
for their trace never take much of a stage's prefetch, so the linger never caps its rate."""
STALL_AFTER = 120.0
"""Seconds a delivery may be held without an outcome before the stage reports not ready (stalled)."""
RETRY_PAUSE = 1.0
"""Pause before a delivery that failed is retried, so that a fault never turns into a hot loop."""


def envelope_problem(envelope: Envelope) -> str | None:
    """Why no stage can do anything with this envelope (None when it is fine)."""
    if not envelope.rcpt_to:
        return "envelope without recipients"
    if len(set(envelope.itinerary)) < len(envelope.itinerary):
        # A stage named twice would pass the message to itself for ever (next_stage finds the first).
        return f"itinerary names a stage twice: {envelope.itinerary}"
    return None


class Transient(Exception):
    """A temporary fault (a dependency is down): retry the message later, it is not poison."""


def count_verdict(stage: str, envelope: Envelope, outputs: list[Publish]) -> None:
    """Count the verdict ``stage`` reached for one message (the first copy's, if it was split)."""
    verdict = next((o.envelope.verdicts[stage] for o in outputs if stage in o.envelope.verdicts), None)
    if verdict is None:
        verdict = envelope.verdicts.get(stage)
    if verdict is not None:
        VERDICTS.labels(stage, verdict.result).inc()


class Runtime:
    """Connections and housekeeping of one service process."""

    def __init__(self, service: str, settings: Settings, *, worker: int = 0, prefetch: int = 32,
                 ready_checks: Iterable[ReadyCheck] = (), background: Iterable[Background] = ()):
        """``ready_checks``: more conditions of readiness; ``background``: tasks run from ``start`` until
        ``shutdown`` (a dependency's pinger, a watcher)."""
        self.service = service
        self.settings = settings
        self.worker = worker
        setup_logging(colocated.process_name(service), settings.log_format, settings.log_level)
        self.tracer = setup_tracing(service)
        self.policy = PolicyHolder(settings.policy_path, on_change=self._policy_changed)
        self.bus = Bus(settings.amqp_url, prefetch=prefetch)
        self.acks = AckBatcher()
        self._redis: redisclient.Redis | None = None
        self._scripts: ScriptBatcher | None = None
        self.trace: TraceStore | TracePublisher
        """The trace: Redis (``records = redis``), or batches published to ``mailmoat.trace`` for the
        recorder to write to PostgreSQL (``records = postgresql``); ``record`` is the same either way."""
        if settings.records == "postgresql":
            self.trace = TracePublisher(bus_sender(self.bus, settings.publish_timeout), linger=TRACE_LINGER,
                                         flush_at=max(1, prefetch // TRACE_FLUSH_SHARE))
        else:
            from mailmoat_records.trace import TraceStore

            self.trace = TraceStore(self.redis, self.policy.current.trace.retention_days, batch=self.scripts)
        self._ready_checks: list[ReadyCheck] = list(ready_checks)
        self._background: list[Background] = list(background)
        self._stop_hooks: list[Callable[[], Awaitable[None]]] = []
        self.held = Held()
        """Deliveries held without an outcome yet (readiness, ``mailmoat_oldest_unacked_seconds``)."""
        self.stall_after: float | Callable[[], float] = STALL_AFTER
        """The stall bound in seconds (or a function of the policy in force)."""
        self.dependencies: list[Dependency] = []
        self.retry_pause = RETRY_PAUSE
        self._started = False
        self._closers: list[Callable[[], Awaitable[None]]] = []
        self._queues: list[str] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._in_flight = 0
        self._stopping = asyncio.Event()
        self._http: ProbeServer | None = None
        self.http_port: int | None = None
        # Labelled children looked up once, not per message.
        self._in_flight_gauge = IN_FLIGHT.labels(service)
        self._processing = PROCESSING.labels(service)
        self._outcomes: dict[str, Any] = {}
        self._queue_wait: dict[str, Any] = {}
        OLDEST_UNACKED.labels(service).set_function(self.held.oldest_age)

    def _policy_changed(self, policy: object) -> None:
        POLICY_RELOADS.labels(self.service, "ok").inc()
        self.trace.retention = self.policy.current.trace.retention_days * 86400

    def add_ready_check(self, check: ReadyCheck) -> None:
        self._ready_checks.append(check)

    def add_background(self, job: Background) -> asyncio.Task[None] | None:
        """Run ``job()`` as a task from ``start`` (at once when started already) until ``shutdown``;
        its task when it started."""
        self._background.append(job)
        if not self._started:
            return None
        task = asyncio.create_task(job())
        self._tasks.append(task)
        return task

    def on_stop(self, hook: Callable[[], Awaitable[None]]) -> None:
        """Await ``hook()`` first when the runtime shuts down (no new work by then: ``stopping`` is set),
        before it stops consuming and closes its connections."""
        self._stop_hooks.append(hook)

    def add_dependency(self, name: str, probe: Callable[[], Awaitable[object]], *, interval: float = 1.0,
                       timeout: float = 1.0) -> Dependency:
        """A service the stage cannot work without: probed every ``interval`` seconds, and the stage is
        not ready while the probe fails or takes longer than ``timeout``."""
        gauge = DEPENDENCY_UP.labels(self.service, name)
        dependency = Dependency(name, probe, interval=interval, timeout=timeout,
                                on_change=lambda up: gauge.set(1 if up else 0))
        gauge.set(0)
        self.dependencies.append(dependency)
        if self._started:
            self._tasks.append(asyncio.create_task(dependency.watch()))
        return dependency

    @property
    def redis(self) -> redisclient.Redis:
        """The process's Redis client (``redisclient``: one pipelined connection), made when a service first
        asks: with the records in PostgreSQL the connection filter, antivirus and recorder never do."""
        if self._redis is None:
            from mailmoat_platform import redisclient

            self._redis = redisclient.from_url(self.settings.redis_url, socket_timeout=5, socket_connect_timeout=5)
        return self._redis

    @redis.setter
    def redis(self, client: redisclient.Redis) -> None:
        self._redis = client

    @property
    def scripts(self) -> ScriptBatcher:
        """Redis script calls of this process, one pipeline per round trip (trace writes included)."""
        if self._scripts is None:
            from mailmoat_platform.redisbatch import ScriptBatcher

            self._scripts = ScriptBatcher(lambda: self.redis)
        return self._scripts

    def require_redis(self, *, interval: float = 1.0, timeout: float = 1.0) -> Dependency:
        """Readiness follows Redis (probed on a connection of its own, so a hung Redis is noticed
        within ``interval`` + ``timeout`` seconds whatever the stage's own calls are waiting for)."""
        from mailmoat_platform import redisclient

        client = redisclient.from_url(self.settings.redis_url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self._closers.append(client.aclose)
        return self.add_dependency("redis", client.ping, interval=interval, timeout=timeout)

    def stall_bound(self) -> float:
        return self.stall_after() if callable(self.stall_after) else self.stall_after

    def ready(self) -> bool:
        if self._stopping.is_set():
            return False
        if self._queues and not self.bus.consuming(self._queues):
            return False
        if self.held.stalled(self.stall_bound()):
            return False
        if not all(dependency.up for dependency in self.dependencies):
            return False
        return all(check() for check in self._ready_checks)

    # --- start and stop -------------------------------------------------------------------------

    async def start(self, *, bus: bool = True) -> None:
        await self._start_http()
        self._tasks.append(asyncio.create_task(self._watch_policy()))
        self._started = True
        self._tasks += [asyncio.create_task(dependency.watch()) for dependency in self.dependencies]
        self._tasks += [asyncio.create_task(job()) for job in self._background]
        if bus:
            await self.connect_bus()

    async def connect_bus(self) -> None:
        """Connect to RabbitMQ, waiting (with one log line per try) until it answers."""
        delay = 0.5
        while not self._stopping.is_set():
            try:
                await self.bus.connect()
                return
            except Exception as exc:  # any connection failure: keep trying
                log.warning("waiting for RabbitMQ at %s: %s", _safe_url(self.settings.amqp_url), exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10)

    async def _watch_policy(self) -> None:
        refused = self.policy.refused
        while True:
            await asyncio.sleep(1.0)
            self.policy.check()
            if self.policy.refused != refused:
                POLICY_RELOADS.labels(self.service, "refused").inc(self.policy.refused - refused)
                refused = self.policy.refused

    async def _start_http(self) -> None:
        self._http = ProbeServer({"/metrics": self._metrics, "/healthz": self._healthz, "/readyz": self._readyz})
        port = self.settings.metrics_port(self.service, self.worker)
        await self._http.start(self.settings.metrics_host, port)
        self.http_port = self._http.port or port

    def _metrics(self) -> Answer:
        return 200, CONTENT_TYPE_LATEST, generate_latest()

    def _healthz(self) -> Answer:
        return 200, TEXT, b"ok\n"

    def _readyz(self) -> Answer:
        return (200, TEXT, b"ready\n") if self.ready() else (503, TEXT, b"not ready\n")

    def request_stop(self) -> None:
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        """SIGTERM (or ``request_stop``) arrived: no new work; what is in flight finishes."""
        return self._stopping.is_set()

    async def serve_forever(self) -> None:
        """Run until SIGTERM/SIGINT, then stop consuming and let in-flight messages finish."""
        loop = asyncio.get_running_loop()
        _SERVING.add(self)
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop_all)
        heap.settle(self.service)
        try:
            await self._stopping.wait()
            await self.shutdown()
        finally:
            _SERVING.discard(self)

    async def shutdown(self, grace: float = 30.0) -> None:
        self._stopping.set()
        colocated.forget(self)
        hooks, self._stop_hooks = self._stop_hooks, []
        for hook in hooks:
            try:
                await hook()
            except Exception:  # the rest of the shutdown must still happen
                log.exception("%s: a stop hook failed", self.service)
        with contextlib.suppress(Exception):
            await self.bus.stop_consuming()
        deadline = time.monotonic() + grace
        while self._in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for task in self._tasks:
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.acks.drain(), 5)
        if isinstance(self.trace, TracePublisher):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.trace.drain(), 5)
        with contextlib.suppress(Exception):
            await self.bus.close()
        if self._redis is not None:
            with contextlib.suppress(Exception):
                await self._redis.aclose()
        for close in self._closers:
            with contextlib.suppress(Exception):
                await close()
        if self._http is not None:
            await self._http.cleanup()

    # --- a filter stage's last step ---------------------------------------------------------------

    async def finish(self, envelope: Envelope, data: bytes, verdict: Verdict, event: TraceEvent,
                     header: bytes = b"", *, authors: Iterable[str] = ()) -> Publish:
        """The end of a filter stage's work on a message: add the verdict, prepend ``header`` (the
        stage's report header fields, may be empty) to ``data``, set ``envelope.size``, record the
        trace event (``authors``: the From addresses to index it by), and return the publish to the next
        stage of the itinerary. The trace record goes out as ``record`` sends it: beside the publish to
        the next stage."""
        envelope.add_verdict(verdict)
        envelope.size = len(header) + len(data)
        publish = stage_publish(envelope, data, self.service, header)
        await self.record(event, authors=authors)
        return publish

    async def record(self, events: TraceEvent | list[TraceEvent], **values: Any) -> None:
        """Record trace events (``values``: as ``TraceSink.record`` takes them). Within a delivery they are not
        awaited here: they go out beside the delivery's publishes, and the delivery is acked only once both
        are settled, so mail never waits for the trace. Outside a delivery they are awaited."""
        record = self.trace.record(events, **values)
        waits = _TRACE_WAITS.get()
        if waits is None:
            await record
        else:
            waits.append(asyncio.ensure_future(record))

    # --- consuming ------------------------------------------------------------------------------

    async def consume_stage(self, stage: str, handler: Handler, queue: str | None = None) -> None:
        """Consume the stage's queue with ``handler``; declares the queue first."""
        name = queue or await self.bus.declare_stage(stage)

        async def on_message(message: Delivery) -> None:
            await self._process(stage, name, handler, message)

        await self.bus.consume(name, on_message)
        colocated.register(name, self, stage, handler)
        if name not in self._queues:
            self._queues.append(name)

    async def _process(
        self, stage: str, queue: str, handler: Handler, message: Delivery
    ) -> None:
        waited = queue_wait(message.headers, message.redelivered, time.time())
        if waited is not None:
            histogram = self._queue_wait.get(stage)
            if histogram is None:
                histogram = self._queue_wait[stage] = QUEUE_WAIT.labels(stage)
            histogram.observe(waited)
        held = self.held.begin()
        self._in_flight += 1
        self._in_flight_gauge.inc()
        started = time.perf_counter()
        try:
            outcome = await self._traced(stage, queue, handler, message)
        except Exception as exc:  # never let one delivery escape without an outcome
            log.exception("unexpected failure handling a message on %s", queue)
            outcome = await self._last_resort(stage, message, exc)
        finally:
            self._finished(held, started, None)
        self._count(outcome)

    def _finished(self, held: int, started: float, outcome: str | None) -> None:
        """A message's work in this stage is over: no longer held or in flight, its processing time observed,
        and its outcome counted (``None``: counted by the caller once known)."""
        self.held.end(held)
        self._in_flight_gauge.dec()
        self._in_flight -= 1
        self._processing.observe(time.perf_counter() - started)
        if outcome is not None:
            self._count(outcome)

    def _count(self, outcome: str) -> None:
        counter = self._outcomes.get(outcome)
        if counter is None:
            counter = self._outcomes[outcome] = MESSAGES.labels(self.service, outcome)
        counter.inc()

    async def _traced(self, stage: str, queue: str, handler: Handler, message: Delivery) -> str:
        """Handle the delivery in the trace context its headers carry (none when they carry none
        that can be read)."""
        context = extract(message.headers)
        if tracing_records():
            with self.tracer.start_as_current_span(
                f"{queue} process",
                context=context,
                kind=SpanKind.CONSUMER,
                attributes={
                    "messaging.system": "rabbitmq",
                    "messaging.operation.type": "process",
                    "messaging.destination.name": queue,
                    "messaging.message.id": header_text(message.message_id) or "",
                },
            ) as span:
                outcome = await self._handle(stage, queue, handler, message)
                span.set_attribute("mailmoat.outcome", outcome)
                return outcome
        # Spans go nowhere: no span of this stage, the sender's context stays current (log lines
        # keep the trace id, outputs carry the same trace on).
        token = otel_context.attach(context)
        try:
            return await self._handle(stage, queue, handler, message)
        finally:
            otel_context.detach(token)

    async def _last_resort(self, stage: str, message: Delivery, exc: Exception) -> str:
        """An outcome for a delivery whose handling raised outside the handler's own error path (the
        broker or Redis failing while we settled it, or a fault of our own): after a pause, back to
        the queue; at the delivery limit, to the dead-letter queue with the reason."""
        try:
            if delivery_count(message.headers) + 1 >= self.bus.delivery_limit:
                return await self._dead_raw(message, f"{stage}: {type(exc).__name__}: {exc}")
            await asyncio.sleep(self.retry_pause)
            await self.acks.nack(message)
        except Exception as again:  # the channel is gone: the broker delivers it again
            log.warning("could not settle a delivery on %s: %s: %s", stage, type(again).__name__, again)
        return "error"

    async def _handle(
        self, stage: str, queue: str, handler: Handler, message: Delivery
    ) -> str:
        try:
            envelope, data = message.decode()
        except FrameError as exc:
            return await self._dead_raw(message, f"{stage}: {exc}")
        problem = envelope_problem(envelope)
        if problem is not None:
            return await self._dead(message, envelope, data, f"{stage}: {problem}")
        traces: list[asyncio.Future[bool]] = []
        try:
            token = _TRACE_WAITS.set(traces)
            try:
                outputs = await handler(envelope, data)
            except Exception:
                await _settle(traces)
                raise
            else:
                if colocated.active():
                    outputs = await self._hand_over(outputs)
            finally:
                _TRACE_WAITS.reset(token)
            for output in outputs:
                inject(output.headers)
            try:
                await self.bus.publish_many(outputs)
            finally:
                await _settle(traces)
            self.acks.ack(message)
            count_verdict(stage, envelope, outputs)
            return "ok"
        except Transient as exc:
            log.warning("%s: temporary failure, retrying later: %s", stage, exc, extra={"message_id": envelope.id})
            await asyncio.sleep(self.retry_pause)
            try:
                # Re-publishing (rather than nack) keeps the poison counter for real poison.
                await self.bus.publish(Publish(queue, envelope, data, republishable(message.headers)))
                self.acks.ack(message)
            except Exception:
                await self.acks.nack(message)
            return "retry"
        except Exception as exc:
            count = delivery_count(message.headers)
            if count + 1 >= self.bus.delivery_limit:
                log.exception("dead-lettering %s after %d attempts", envelope.id, count + 1,
                              extra={"message_id": envelope.id})
                return await self._dead(message, envelope, data, f"{stage}: {type(exc).__name__}: {exc}")
            log.exception("%s: failed on %s (attempt %d), will retry", stage, envelope.id, count + 1,
                          extra={"message_id": envelope.id})
            await asyncio.sleep(self.retry_pause)
            await self.acks.nack(message)
            return "error"

    async def _hand_over(self, outputs: list[Publish], depth: int = 0) -> list[Publish]:
        """``outputs`` with each publish to a stage of this process replaced by what that stage makes of the
        message, handled at once (``colocated``); the rest is left to publish."""
        out: list[Publish] = []
        for output in outputs:
            target = colocated.local(output.queue) if depth < colocated.MAX_CHAIN else None
            if target is None:
                out.append(output)
            else:
                out += await target.runtime._handle_handed(target.stage, target.handler, output, depth + 1)
        return out

    async def _handle_handed(self, stage: str, handler: Handler, given: Publish, depth: int) -> list[Publish]:
        """This stage's work on a message another stage of the process handed over: its outputs (handed on
        in turn), or, when it fails, ``given`` itself, to be published to this stage's queue so that its
        consumer handles it as any message (retries, delivery limit, dead-letter queue)."""
        held = self.held.begin()
        self._in_flight += 1
        self._in_flight_gauge.inc()
        started = time.perf_counter()
        outcome = "ok"
        try:
            # What the broker would have handed over: a copy of the envelope, so a failure part-way
            # leaves ``given`` as it was.
            envelope = Envelope.model_validate_json(given.envelope.model_dump_json())
            if envelope_problem(envelope) is not None:
                outcome = "handed-back"
                return [given]
            outputs = await handler(envelope, given.message)
            count_verdict(stage, envelope, outputs)
            return await self._hand_over(outputs, depth)
        except Exception as exc:
            outcome = "handed-back"
            if isinstance(exc, Transient):
                log.warning("%s: temporary failure, passed to its queue: %s", stage, exc,
                            extra={"message_id": given.envelope.id})
            else:
                log.exception("%s: failed on %s handed over in memory; passed to its queue", stage,
                              given.envelope.id, extra={"message_id": given.envelope.id})
            return [given]
        finally:
            self._finished(held, started, outcome)

    async def _dead(self, message: Delivery, envelope: Envelope, data: bytes, reason: str) -> str:
        """Dead-letter a delivery whose envelope was read: the frame with the reason, a DEADLETTER event."""
        log.error("dead-lettering %s: %s", envelope.id, reason, extra={"message_id": envelope.id})
        await self.bus.publish(Publish(DEAD_QUEUE, envelope, data, {"x-mailmoat-dead-reason": reason[:1000]}))
        await self.trace.record(TraceEvent(event="DEADLETTER", message_id=envelope.id, service=self.service,
                                           recipients=envelope.rcpt_to, detail=reason))
        self.acks.ack(message)
        return "dead"

    async def _dead_raw(self, message: Delivery, reason: str) -> str:
        """Dead-letter a delivery as it came (body and headers), with the reason; a DEADLETTER event
        under its AMQP message id when it has one."""
        message_id = header_text(message.message_id, 200) or header_text(message.headers.get("x-mailmoat-id"), 200)
        log.error("dead-lettering a message from %s: %s", reason.split(":", 1)[0], reason,
                  extra={"message_id": message_id})
        await self.bus.publish_raw_dead(message.body, reason, republishable(message.headers))
        if message_id:
            await self.trace.record(TraceEvent(event="DEADLETTER", message_id=message_id, service=self.service,
                                               detail=reason))
        self.acks.ack(message)
        return "dead"


async def serve_stage(
    service: str, settings: Settings, worker: int, make_handler: Callable[[Runtime], Handler], prefetch: int = 32,
    *, ready_checks: Iterable[Callable[[Runtime], bool]] = (),
    background: Iterable[Callable[[Runtime], Awaitable[None]]] = (),
) -> None:
    """Run a stage whose wiring is one handler on its own queue, until SIGTERM; ``ready_checks`` and
    ``background`` (functions of the runtime) as ``Runtime`` takes them."""
    runtime = Runtime(service, settings, worker=worker, prefetch=prefetch)
    for check in ready_checks:
        runtime.add_ready_check(functools.partial(check, runtime))
    for job in background:
        runtime.add_background(functools.partial(job, runtime))
    await runtime.start()
    await runtime.consume_stage(service, make_handler(runtime))
    await runtime.serve_forever()


_SERVING: set[Runtime] = set()
"""The runtimes of this process serving until SIGTERM (several with ``colocated``)."""


def stop_all() -> None:
    """SIGTERM/SIGINT: every runtime of the process stops taking work and finishes what it holds."""
    for runtime in list(_SERVING):
        runtime.request_stop()


async def _settle(traces: list[asyncio.Future[bool]]) -> None:
    """Wait for the trace records handed over during a delivery (best effort: a failure is logged).

    Empties ``traces`` whatever happens: each task in it was made in the delivery's context, which holds
    the list, so a filled list is a reference cycle only the cyclic collector would free (a pause of tens
    of milliseconds in every stage under load, when it did)."""
    if not traces:
        return
    try:
        outcomes = await asyncio.gather(*traces, return_exceptions=True)
    finally:
        traces.clear()
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            log.warning("trace record failed: %s: %s", type(outcome).__name__, outcome)


def stage_publish(envelope: Envelope, data: bytes, stage: str, prefix: bytes = b"") -> Publish:
    """A Publish of ``prefix + data`` to the stage after ``stage`` in the envelope's itinerary."""
    nxt = envelope.next_stage(stage)
    if nxt is None:
        raise ValueError(f"{stage} is the last stage of {envelope.itinerary}")
    return Publish(stage_queue(nxt), envelope, data, prefix=prefix)


def _safe_url(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://{rest.split('@', 1)[1]}"
    return url


def run_service(main: Callable[[], Awaitable[None]]) -> None:
    """Run a service's async main on uvloop when available."""
    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())

