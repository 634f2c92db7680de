"""Metrics (prometheus-client), tracing (OpenTelemetry, W3C context in AMQP headers), JSON logs."""

from __future__ import annotations

import json
import logging
import os
import random
import sys
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from prometheus_client import Counter, Gauge, Histogram

from mailmoat_mail.headers import text as header_text

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

MESSAGES = Counter(
    "mailmoat_messages_total", "Messages a stage finished, by outcome.", ["service", "outcome"]
)
PROCESSING = Histogram(
    "mailmoat_processing_seconds",
    "Time a stage spent on one message (consume to ack).",
    ["service"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
VERDICTS = Counter(
    "mailmoat_verdicts_total",
    "Verdicts the filter and routing stages reached, by stage and result (the verdict mix).",
    ["stage", "result"],
)
QUEUE_WAIT = Histogram(
    "mailmoat_queue_wait_seconds",
    "Time a message waited in a stage's queue, from its publish by the previous stage (or ingress) to "
    "this stage's consume; first deliveries only (not redeliveries, not returns from a delay queue).",
    ["stage"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
)
IN_FLIGHT = Gauge("mailmoat_in_flight_messages", "Messages a stage is working on now.", ["service"])
OLDEST_UNACKED = Gauge(
    "mailmoat_oldest_unacked_seconds",
    "Age of the oldest delivery a stage holds without an outcome (acked, retried or dead-lettered); "
    "0 when it holds none. It grows without bound when the stage is stuck.",
    ["service"],
    multiprocess_mode="max",
)
DEPENDENCY_UP = Gauge(
    "mailmoat_dependency_up", "Whether a service the stage cannot work without answers its probe (1) or not (0).",
    ["service", "dependency"],
)
POLICY_RELOADS = Counter(
    "mailmoat_policy_reloads_total", "Policy reload attempts, by result.", ["service", "result"]
)

_propagator = TraceContextTextMapPropagator()
_TRACE_HEADERS = tuple(_propagator.fields)
_configured = False
_records = False


def otel_service_name(service: str) -> str:
    """The OpenTelemetry ``service.name`` of a service: ``mailmoat-connection-filter`` for
    ``connection_filter``, as the Kubernetes Deployments and compose services are named."""
    return "mailmoat-" + service.replace("_", "-")


def setup_tracing(service: str) -> trace.Tracer:
    """A tracer for ``service``; spans export over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set,
    to stdout when OTEL_TRACES_EXPORTER=console, and nowhere otherwise.

    Without an exporter, spans record nothing: each still gets a trace id and a span id (so the
    W3C context propagates in AMQP headers and log lines carry ``trace_id``), and the OpenTelemetry
    SDK is not even loaded (about 2 MB a process, bench/README.md).
    """
    global _configured, _records
    if not _configured:
        processor = _span_processor()
        if processor is not None:
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider

            name = os.environ.get("OTEL_SERVICE_NAME", otel_service_name(service))
            provider = TracerProvider(resource=Resource.create({"service.name": name}))
            provider.add_span_processor(processor)
            trace.set_tracer_provider(provider)
            _records = True
        _configured = True
    if not _records:
        return IdTracer()
    return trace.get_tracer(f"mailmoat.{service}")


class IdTracer(trace.Tracer):
    """Spans that record nothing and only carry ids: a new span id in the trace of the context's span,
    or in a new trace when the context has none (what the SDK's never-sampling tracer makes)."""

    def start_span(self, name: str, context: otel_context.Context | None = None,
                   kind: trace.SpanKind = trace.SpanKind.INTERNAL, attributes: Any = None,
                   links: Sequence[trace.Link] | None = None, start_time: int | None = None,
                   record_exception: bool = True, set_status_on_exception: bool = True) -> trace.Span:
        parent = trace.get_current_span(context).get_span_context()
        if parent.is_valid:
            trace_id, state = parent.trace_id, parent.trace_state
        else:
            trace_id, state = _nonzero(128), trace.TraceState()
        return trace.NonRecordingSpan(trace.SpanContext(
            trace_id, _nonzero(64), is_remote=False, trace_flags=trace.TraceFlags(trace.TraceFlags.DEFAULT),
            trace_state=state,
        ))

    @contextmanager
    def start_as_current_span(self, name: str, context: otel_context.Context | None = None,
                              kind: trace.SpanKind = trace.SpanKind.INTERNAL, attributes: Any = None,
                              links: Sequence[trace.Link] | None = None, start_time: int | None = None,
                              record_exception: bool = True, set_status_on_exception: bool = True,
                              end_on_exit: bool = True) -> Iterator[trace.Span]:
        span = self.start_span(name, context)
        with trace.use_span(span, end_on_exit=end_on_exit) as current:
            yield current


def _nonzero(bits: int) -> int:
    """A random id of ``bits`` bits, never 0 (the invalid id)."""
    while True:
        value = random.getrandbits(bits)
        if value:
            return value


def tracing_records() -> bool:
    """Whether spans are exported anywhere (set up by ``setup_tracing``)."""
    return _records


def _span_processor() -> BatchSpanProcessor | None:
    """The span processor the ``OTEL_*`` environment asks for, or None when spans go nowhere."""
    exporter_name = os.environ.get("OTEL_TRACES_EXPORTER", "")
    if exporter_name == "console":
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

        return BatchSpanProcessor(ConsoleSpanExporter(out=sys.stderr))
    if exporter_name != "none" and (
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    ):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        return BatchSpanProcessor(OTLPSpanExporter())
    return None


def inject(headers: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Write the current span's W3C trace context into AMQP headers."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    headers.update(carrier)
    return headers


def trace_context(headers: Mapping[str, Any] | None) -> dict[str, str]:
    """The W3C trace context fields (``traceparent``, ``tracestate``) of AMQP headers, as text; a
    field that is not text (another type, bytes that are not UTF-8, oversized) is left out."""
    carrier: dict[str, str] = {}
    if not isinstance(headers, Mapping):
        return carrier
    for key in _TRACE_HEADERS:
        value = header_text(headers.get(key))
        if value is not None:
            carrier[key] = value
    return carrier


def extract(headers: Mapping[str, Any] | None) -> otel_context.Context:
    """The trace context AMQP headers carry; an empty context when they carry none, or none that
    parses (never raises: a delivery's headers come from anyone who can publish)."""
    try:
        return _propagator.extract(trace_context(headers))
    except Exception:  # the propagator's parsing of foreign text
        logging.getLogger(__name__).warning("ignoring an unreadable trace context", exc_info=True)
        return otel_context.Context()


def current_trace_id() -> str | None:
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the message id (``extra={"message_id": ...}``) and trace id."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in ("service", "message_id"):
            value = getattr(record, key, None)
            if value is not None:
                out[key] = value
        trace_id = current_trace_id()
        if trace_id:
            out["trace_id"] = trace_id
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def setup_logging(service: str, fmt: str = "json", level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s"))

    class _ServiceFilter(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            if not hasattr(record, "service"):
                record.service = service
            return True

    handler.addFilter(_ServiceFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiormq", "aio_pika", "mail.log"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
