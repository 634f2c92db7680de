"""The antivirus stage on the real broker and Redis, with the real clamd (and a proxy to cut it)."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Callable

import pytest

from mailmoat_antivirus.service import PING_TIMEOUT, SERVICE, Engine, background, make_handler, ready
from mailmoat_antivirus.signatures import export_health
from mailmoat_platform.bus import Bus, Publish, decode, stage_queue
from mailmoat_platform.models import Envelope
from mailmoat_platform.runtime import Runtime
from mailmoat_platform.settings import Settings
from tests.support.attachments import message, zip_of
from tests.support.clamd import EICAR, ClamdServer
from tests.support.tcpproxy import TcpProxy
from tests.support.traced import wait_traced

pytestmark = pytest.mark.integration

POLICY = """
antimalware:
  clamd: 127.0.0.1:1
  connect_timeout: 1
  scan_timeout: {scan_timeout}
  fail_open: {fail_open}
  action: quarantine
"""


class Stage:
    """The antivirus stage in this process, and a probe connection on the broker."""

    def __init__(self, runtime: Runtime, probe: Bus, engine: Engine):
        self.runtime = runtime
        self.probe = probe
        self.engine = engine

    async def send(self, data: bytes) -> Envelope:
        envelope = Envelope(mail_from="sender@outside.test", rcpt_to=["alice@example.com"],
                            itinerary=[SERVICE, "routing", "egress"])
        await self.probe.publish(Publish(stage_queue(SERVICE), envelope, data))
        return envelope

    async def take(self, count: int, timeout: float = 20.0) -> list[tuple[Envelope, bytes]]:
        assert self.probe.channel is not None
        queue = await self.probe.channel.get_queue(stage_queue("routing"))
        out: list[tuple[Envelope, bytes]] = []
        deadline = time.monotonic() + timeout
        while len(out) < count and time.monotonic() < deadline:
            incoming = await queue.get(fail=False, no_ack=True)
            if incoming is None:
                await asyncio.sleep(0.05)
            else:
                out.append(decode(incoming.body))
        return out


async def wire(runtime: Runtime, engine: Engine, ping_interval: float = 2.0) -> asyncio.Task[None] | None:
    """The stage on a runtime already started, wired as ``serve_stage`` does: its ready check and
    background tasks, then consume. Returns the pinger's task (cancelling it stops the signature watcher too)."""
    runtime.add_ready_check(lambda: ready(runtime, engine))
    export_health(SERVICE, lambda: engine.available)
    tasks = [runtime.add_background(functools.partial(job, runtime)) for job in background(engine, ping_interval)]
    watcher = tasks[0]
    if watcher is not None:
        watcher.add_done_callback(lambda _: [t.cancel() for t in tasks[1:] if t is not None])
    await runtime.consume_stage(SERVICE, make_handler(runtime, engine))
    return watcher


@pytest.fixture
async def stage_factory(amqp_url, redis_url, write_policy) -> AsyncIterator[Callable[..., object]]:
    made: list[tuple[Stage, asyncio.Task[None]]] = []

    async def make(address: str, fail_open: bool = False, scan_timeout: float = 5) -> Stage:
        path = write_policy(POLICY.format(fail_open=str(fail_open).lower(), scan_timeout=scan_timeout))
        settings = Settings(records="redis", amqp_url=amqp_url, redis_url=redis_url, policy_path=str(path))
        settings.metrics_ports = {}
        runtime = Runtime(SERVICE, settings)
        await runtime.start()
        probe = Bus(amqp_url)
        await probe.connect()
        for name in (SERVICE, "routing"):
            queue = await probe.declare_stage(name)
            assert probe.channel is not None
            await (await probe.channel.get_queue(queue)).purge()
        engine = Engine(address)
        watcher = await wire(runtime, engine, ping_interval=0.2)
        stage = Stage(runtime, probe, engine)
        made.append((stage, watcher))
        return stage

    yield make
    for stage, watcher in made:
        watcher.cancel()
        await stage.probe.close()
        await stage.runtime.shutdown(grace=5)


async def test_verdict_header_and_next_stage(stage_factory, clamd: ClamdServer) -> None:
    stage = await stage_factory(clamd.address)
    infected = message([("invoice.zip", "application/zip", zip_of([("eicar.txt", EICAR)]), "base64")])
    clean = message([("notes.txt", "text/plain", b"meeting at ten\r\n", "quoted-printable"),
                     ("photo.png", "image/png", b"\x89PNG\r\n\x1a\n" + b"\0" * 64, "base64")])
    bad_env = await stage.send(infected)
    good_env = await stage.send(clean)
    results = {env.id: (env, data) for env, data in await stage.take(2)}
    assert set(results) == {bad_env.id, good_env.id}

    env, data = results[bad_env.id]
    verdict = env.verdicts[SERVICE]
    assert verdict.result == "malware" and verdict.detail["action"] == "quarantine"
    assert any(n.startswith("Eicar-Test-Signature") for n in verdict.detail["names"])
    header, _, rest = data.partition(b"\r\n")
    assert header.startswith(b"X-Mailmoat-Malware-Report: result=malware; names=Eicar-Test-Signature")
    assert rest == infected
    assert env.size == len(data)  # the size of what is passed on, header included

    env, data = results[good_env.id]
    assert env.verdicts[SERVICE].result == "clean"
    assert data == b"X-Mailmoat-Malware-Report: result=clean\r\n" + clean  # byte-identical after the header
    assert env.itinerary == [SERVICE, "routing", "egress"]

    # The stage stores its trace beside the publish to routing, not before it.
    await wait_traced(stage.runtime.trace, bad_env.id, "MALWARE")
    await wait_traced(stage.runtime.trace, good_env.id, "SCAN")
    events = await stage.runtime.trace.events(bad_env.id)
    assert [e.event for e in events] == ["MALWARE"] and events[0].data["result"] == "malware"
    assert [e.event for e in await stage.runtime.trace.events(good_env.id)] == ["SCAN"]
    assert stage.runtime.ready()


async def test_clamd_cut_mid_stream_nothing_lost_and_scanning_resumes(stage_factory, clamd: ClamdServer) -> None:
    with TcpProxy(clamd.port) as proxy:
        stage = await stage_factory(f"127.0.0.1:{proxy.port}")
        first = await stage.send(message([("a.txt", "text/plain", EICAR, "base64")]))
        assert [e.id for e, _ in await stage.take(1)] == [first.id]

        proxy.delay(2.0)  # a scan now hangs mid-stream ...
        sent = [await stage.send(message([("b.txt", "text/plain", EICAR, "base64")], subject=f"n{i}"))
                for i in range(3)]
        await asyncio.sleep(0.5)
        proxy.cut()       # ... and the engine goes away under it
        assert await stage.take(1, timeout=3) == []  # never passed on unscanned
        deadline = time.monotonic() + 5
        while stage.runtime.ready() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert not stage.runtime.ready()

        proxy.restore()
        results = await stage.take(3, timeout=30)
        assert sorted(e.id for e, _ in results) == sorted(e.id for e in sent)
        assert all(e.verdicts[SERVICE].result == "malware" for e, _ in results)
        assert all(d.count(b"X-Mailmoat-Malware-Report:") == 1 for _, d in results)
        assert await stage.take(1, timeout=1.5) == []  # and nothing twice
        deadline = time.monotonic() + 5
        while not stage.runtime.ready() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert stage.runtime.ready()


async def test_fail_open_passes_on_unscanned_with_a_trace_event(stage_factory) -> None:
    from tests.support.infra import free_port

    stage = await stage_factory(f"127.0.0.1:{free_port()}", fail_open=True)
    data = message([("a.txt", "text/plain", EICAR, "base64")])
    envelope = await stage.send(data)
    ((env, out),) = await stage.take(1)
    assert env.verdicts[SERVICE].result == "unscanned" and env.verdicts[SERVICE].detail["fail_open"]
    assert out == b"X-Mailmoat-Malware-Report: result=unscanned; fail_open=true\r\n" + data
    await wait_traced(stage.runtime.trace, envelope.id, "SCAN")  # stored beside the publish to routing
    (event,) = await stage.runtime.trace.events(envelope.id)
    assert event.event == "SCAN" and "fail_open" in event.detail
    assert stage.runtime.ready()  # failing open, the stage stays ready without clamd


async def test_a_hung_clamd_makes_the_stage_not_ready_within_seconds(stage_factory, clamd: ClamdServer) -> None:
    """clamd accepts and never answers: not ready within the ping timeout, not after a scan timeout of
    a minute; ready again as soon as it answers."""
    with TcpProxy(clamd.port) as proxy:
        stage = await stage_factory(f"127.0.0.1:{proxy.port}", scan_timeout=60)
        deadline = time.monotonic() + 10
        while not stage.runtime.ready() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert stage.runtime.ready()
        proxy.delay(3600)
        hung = time.monotonic()
        while stage.runtime.ready() and time.monotonic() < hung + 15:
            await asyncio.sleep(0.1)
        assert not stage.runtime.ready()
        assert time.monotonic() - hung < PING_TIMEOUT + 2
        proxy.restore()
        deadline = time.monotonic() + 10
        while not stage.runtime.ready() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert stage.runtime.ready()
