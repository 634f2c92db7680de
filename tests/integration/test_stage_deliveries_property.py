"""Property, against the real broker and Redis: whatever a delivery to a stage queue carries — AMQP
headers of any type, encoding, name or nesting, a body that is garbage, a damaged frame, an envelope
of odd values — the stage settles it within a bound: its queue drains, nothing stays held, and every
dead letter names its reason. Runs routing, egress (into an SMTP sink) and the connection filter.

Deterministic by default (``derandomize``); ``MAILMOAT_PROPERTY_EXAMPLES=200 MAILMOAT_PROPERTY_RANDOM=1``
explores further.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import aiormq
import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from mailmoat_platform.bus import DEAD_QUEUE, MAGIC, Bus, encode, stage_queue
from mailmoat_platform.models import Envelope, Route
from mailmoat_platform.runtime import Runtime
from mailmoat_platform.settings import Settings
from tests.support.amqpraw import RawText, RawTimestamp, RawValue, raw_values
from tests.support.sink import SmtpSink

pytestmark = pytest.mark.integration

BOUND = 20.0
"""Seconds within which a batch must be settled."""
SINK_ROUTE: Route | None = None

POLICY = """
organization: {hostname: gw.test}
accepted_domains: [{domain: example.com}]
delivery: {connect_timeout: 2, command_timeout: 5, retry_delays: [1]}
connection_filter: {ptr: false, helo: false}
"""

STAGES = ("routing", "egress", "connection_filter")

# --- what a publisher may put in a delivery ------------------------------------------------------------
# (What the broker itself refuses is left out: a NaN or infinite float closes the publisher's connection.)

_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1),
    st.floats(width=32, allow_nan=False, allow_infinity=False),
    st.text(max_size=60),
    st.binary(max_size=60).map(RawText), st.binary(max_size=30).map(bytearray),
    st.integers(0, 2**64 - 1).map(RawTimestamp.of), st.sampled_from([Decimal("1.5"), Decimal("-0.001")]),
    st.integers(1, 400).map(RawValue.nested_tables),
)
_keys = st.one_of(
    st.sampled_from(["traceparent", "tracestate", "x-delivery-count", "x-mailmoat-id"]),
    # Not CC/BCC (sender-selected distribution) nor other x- headers the broker itself acts on.
    st.text(min_size=1, max_size=20).filter(lambda k: k not in ("CC", "BCC") and not k.startswith("x-")),
    st.binary(min_size=1, max_size=20).filter(lambda k: not k.startswith(b"x-") and k not in (b"CC", b"BCC"))
    .map(RawText),
)
header_values = st.recursive(
    _leaf, lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner,
                                                                                   max_size=3)),
    max_leaves=8,
)
headers = st.dictionaries(_keys, header_values, max_size=5)

_addresses = st.one_of(st.just("a@example.com"), st.just("b@other.test"), st.text(max_size=30))


@st.composite
def envelopes(draw: st.DrawFn) -> Envelope:
    return Envelope(
        mail_from=draw(st.one_of(st.just(""), _addresses)),
        rcpt_to=draw(st.lists(_addresses, max_size=3)),
        itinerary=draw(st.lists(st.sampled_from(["connection_filter", "routing", "egress", "nowhere"]),
                                max_size=4)),
        route=draw(st.one_of(st.none(), st.just(SINK_ROUTE))),
        helo=draw(st.text(max_size=20)),
    )


def _spliced(frame: bytes, at: int, insert: bytes) -> bytes:
    at %= len(frame) + 1
    return frame[:at] + insert + frame[at + len(insert):]


def _json_frame(value: object) -> bytes:
    head = json.dumps(value).encode()
    return MAGIC + len(head).to_bytes(4, "big") + head + b"Subject: x\r\n\r\n"


_json = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=20)),
                     lambda inner: st.one_of(st.lists(inner, max_size=3),
                                             st.dictionaries(st.text(max_size=10), inner, max_size=3)),
                     max_leaves=10)
bodies = st.one_of(
    st.binary(max_size=200),
    st.builds(encode, envelopes(), st.binary(max_size=200)),
    st.builds(_spliced, st.builds(encode, envelopes(), st.just(b"Subject: x\r\n\r\nbody\r\n")),
              st.integers(0, 400), st.binary(min_size=1, max_size=4)),
    st.builds(lambda d, extra: _json_frame({"id": "01J0000000000000000000000X", "itinerary": ["routing"],
                                            **d, **extra}),
              st.dictionaries(st.sampled_from(["rcpt_to", "mail_from", "size", "route", "verdicts", "kind"]),
                              _json, max_size=3),
              st.dictionaries(st.text(max_size=8), _json, max_size=2)),
)
deliveries = st.lists(st.tuples(headers, bodies), min_size=1, max_size=25)

# --- the stages -------------------------------------------------------------------------------------------


@dataclass
class Stage:
    name: str
    runtime: Runtime
    probe: Bus


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    global SINK_ROUTE
    with SmtpSink() as server:
        SINK_ROUTE = Route(name="route:sink", kind="smarthost", hosts=[f"127.0.0.1:{server.port}"], tls="none")
        yield server


def _handler(name: str, runtime: Runtime) -> tuple[Callable, Callable[[], object] | None]:
    if name == "routing":
        from mailmoat_routing.service import make_handler

        return make_handler(runtime), None
    if name == "egress":
        from mailmoat_egress.delivery import SessionPool
        from mailmoat_egress.service import Egress

        egress = Egress(runtime, SessionPool(local_hostname="gw.test"))
        return egress.handle, egress.close
    from mailmoat_connection_filter.service import make_handler as cf_handler

    return cf_handler(runtime), None


@pytest.fixture(params=STAGES)
async def stage(request: pytest.FixtureRequest, amqp_url: str, redis_url: str,
                write_policy: Callable[[str], Path], sink: SmtpSink) -> AsyncIterator[Stage]:
    name = request.param
    settings_ = Settings(amqp_url=amqp_url, redis_url=redis_url, policy_path=str(write_policy(POLICY)),
                         log_format="text", log_level="CRITICAL")
    settings_.metrics_ports = {}
    probe = Bus(amqp_url)
    await probe.connect()
    assert probe.channel is not None
    for queue in (await probe.declare_stage(name), DEAD_QUEUE):
        await (await probe.channel.get_queue(queue)).purge()
    runtime = Runtime(name, settings_)
    runtime.retry_pause = 0.05
    await runtime.start()
    handler, close = _handler(name, runtime)
    await runtime.consume_stage(name, handler)
    try:
        yield Stage(name, runtime, probe)
    finally:
        await probe.close()
        await runtime.shutdown(grace=5)
        if close is not None:
            await close()  # type: ignore[misc]


def _finished(service: str) -> float:
    """Deliveries the stage settled for good (acked: ok, dead, or republished for a retry)."""
    return sum(REGISTRY.get_sample_value("mailmoat_messages_total", {"service": service, "outcome": o}) or 0.0
               for o in ("ok", "dead", "retry"))


async def _settled(stage: Stage, count: int, before: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + BOUND
    while loop.time() < deadline:
        if (_finished(stage.name) - before >= count and len(stage.runtime.held) == 0
                and await stage.probe.queue_depth(stage_queue(stage.name)) == 0):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(
        f"{stage.name}: {_finished(stage.name) - before:.0f} of {count} settled, {len(stage.runtime.held)} held, "
        f"{await stage.probe.queue_depth(stage_queue(stage.name))} waiting after {BOUND}s"
    )


async def _dead_reasons(probe: Bus) -> list[object]:
    assert probe.channel is not None
    queue = await probe.channel.get_queue(DEAD_QUEUE)
    reasons = []
    while (message := await queue.get(fail=False, no_ack=True)) is not None:
        reasons.append((message.headers or {}).get("x-mailmoat-dead-reason"))
    return reasons


@settings(max_examples=int(os.environ.get("MAILMOAT_PROPERTY_EXAMPLES", "6")), deadline=None, database=None,
          derandomize=not os.environ.get("MAILMOAT_PROPERTY_RANDOM"),
          phases=[Phase.explicit, Phase.reuse, Phase.generate],  # no shrinking: a failing try takes BOUND
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(batch=deliveries)
@example(batch=[({}, encode(Envelope(rcpt_to=["a@example.com"], itinerary=[s for s in STAGES for _ in "xx"]),
                            b"Subject: loop\r\n\r\n"))])  # each stage twice: it would pass it to itself for ever
async def test_every_delivery_is_settled_and_dead_letters_have_reasons(stage: Stage, batch) -> None:
    before = _finished(stage.name)
    assert stage.probe.channel is not None
    channel = await stage.probe.channel.get_underlay_channel()
    with raw_values():
        for headers_, body in batch:
            await channel.basic_publish(body, routing_key=stage_queue(stage.name),
                                        properties=aiormq.spec.Basic.Properties(headers=headers_, delivery_mode=2))
    await _settled(stage, len(batch), before)
    for reason in await _dead_reasons(stage.probe):
        assert isinstance(reason, str) and reason.startswith(f"{stage.name}: "), reason
