"""Spans without an exporter: ids only, the trace carried on, and no OpenTelemetry SDK behind them."""

from __future__ import annotations

import subprocess
import sys

from opentelemetry import trace

from mailmoat_platform.telemetry import IdTracer, current_trace_id, extract, inject


def test_a_span_without_a_parent_starts_a_trace_of_its_own() -> None:
    tracer = IdTracer()
    one, two = tracer.start_span("smtp receive"), tracer.start_span("smtp receive")
    for span in (one, two):
        context = span.get_span_context()
        assert context.is_valid and not context.trace_flags.sampled and not span.is_recording()
    assert one.get_span_context().trace_id != two.get_span_context().trace_id


def test_the_trace_goes_on_across_a_hop_with_a_new_span_id() -> None:
    tracer = IdTracer()
    first = tracer.start_span("smtp receive")
    headers: dict[str, object] = {}
    with trace.use_span(first):
        inject(headers)
    assert headers["traceparent"] == (
        f"00-{first.get_span_context().trace_id:032x}-{first.get_span_context().span_id:016x}-00"
    )
    with tracer.start_as_current_span("next stage", context=extract(headers)) as span:
        assert current_trace_id() == f"{first.get_span_context().trace_id:032x}"
        assert span.get_span_context().span_id != first.get_span_context().span_id
    assert current_trace_id() is None


def test_without_an_exporter_the_sdk_is_not_loaded() -> None:
    program = (
        "import sys; from mailmoat_platform.telemetry import setup_tracing, tracing_records; "
        "t = setup_tracing('ingress'); t.start_span('x'); "
        "print(tracing_records(), any(m.startswith('opentelemetry.sdk') for m in sys.modules))"
    )
    env = {"PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=True,
                          env=env)
    assert done.stdout.split() == ["False", "False"]


def test_with_the_console_exporter_spans_are_recorded() -> None:
    program = (
        "from mailmoat_platform.telemetry import setup_tracing, tracing_records; "
        "t = setup_tracing('ingress'); s = t.start_span('x'); print(tracing_records(), s.is_recording()); s.end()"
    )
    env = {"PATH": "/usr/bin:/bin", "OTEL_TRACES_EXPORTER": "console"}
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=True,
                          env=env)
    assert done.stdout.split()[:2] == ["True", "True"]
    assert '"name": "x"' in done.stderr
