"""Does a stage consumer come back after the broker went away? aio-pika runtime vs FastStream.

The consumer talks to RabbitMQ through a TCP proxy of this process, so the outage touches only its
own connections (nobody else's, and the broker keeps running). Per implementation and mode:

1. ``--messages`` framed messages are preloaded into ``mailmoat.a``; the consumer starts (through
   the proxy) and moves them to ``mailmoat.b``;
2. once a third of them has arrived in B, the outage starts:
   ``tcp``: the proxy resets every connection and refuses new ones (a crash / network cut);
   ``forced``: ``rabbitmqctl close_all_connections -p <vhost>`` (the broker closes with
   CONNECTION_FORCED, as on shutdown), and the proxy refuses new connections;
3. after ``--outage`` seconds the proxy accepts again; the run waits until A is empty and B holds
   every message, then publishes 20 more directly into A to check that the consumer is still there.

Reported per case: recovered (all moved and the late 20 consumed), seconds from the end of the
outage to the backlog being done, duplicates in B (redeliveries; at-least-once allows them), the
consumer's own readiness signal, and how many connections the client opened through the proxy.

    .venv/bin/python bench/hop/reconnect.py --impl aiopika faststream --mode tcp forced
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from typing import Any

import hoplib
from stage_hop import CountingRuntime, Probe, faststream_broker, faststream_forward

from mailmoat_platform.bus import Publish, stage_queue
from mailmoat_platform.models import Envelope
from mailmoat_platform.runtime import stage_publish
from mailmoat_platform.settings import Settings


class CutProxy:
    """A TCP forwarder to the broker that can drop every connection and refuse new ones."""

    def __init__(self, target_host: str, target_port: int):
        self.target = (target_host, target_port)
        self.refusing = False
        self.accepted = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.base_events.Server | None = None
        self.port = 0

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def cut(self) -> None:
        self.refusing = True
        for writer in list(self._writers):
            with contextlib.suppress(Exception):
                writer.transport.abort()
        self._writers.clear()

    def restore(self) -> None:
        self.refusing = False

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            writer.transport.abort()
            return
        self.accepted += 1
        try:
            up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(*self.target), 5)
        except (OSError, TimeoutError):
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while chunk := await reader.read(65536):
                writer.write(chunk)
                await writer.drain()
        except (OSError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            with contextlib.suppress(Exception):
                writer.transport.abort()


async def publish_direct(url: str, count: int, size: int) -> None:
    """Publish ``count`` frames into A over a direct (non-proxied) connection."""
    from mailmoat_platform.bus import Bus

    bus = Bus(url)
    await bus.connect()
    try:
        await bus.declare_stage("a")
        data = hoplib.make_data(size)
        await bus.publish_many([Publish(stage_queue("a"), hoplib.make_envelope(), data) for _ in range(count)])
    finally:
        await bus.close()


async def wait_depths(url: str, want_b: int, timeout: float) -> tuple[dict[str, int], float | None]:
    """Poll until A is empty and B holds ``want_b``; returns the last depths and when it happened."""
    deadline = time.monotonic() + timeout
    last: dict[str, int] = {}
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            last = await hoplib.depths(url, ["a", "b"])
            if last["a"] == 0 and last["b"] >= want_b:
                return last, time.monotonic()
        await asyncio.sleep(0.5)
    return last, None


class Consumer:
    """Start/stop/readiness of one implementation's stage consumer on a given URL."""

    def __init__(self, impl: str, url: str, prefetch: int):
        self.impl, self.url, self.prefetch = impl, url, prefetch
        self.runtime: CountingRuntime | None = None
        self.broker: Any = None

    async def start(self) -> None:
        if self.impl == "aiopika":
            runtime = CountingRuntime("benchhop", Settings(amqp_url=self.url, log_format="text", log_level="ERROR"),
                                      prefetch=self.prefetch)
            runtime.probe = Probe(10**9)

            async def handler(envelope: Envelope, data: bytes) -> list[Publish]:
                return [stage_publish(envelope, data, "a")]

            await runtime.start()
            await runtime.bus.declare_stage("b")
            await runtime.consume_stage("a", handler)
            self.runtime = runtime
        else:

            async def on_message(broker: Any, body: bytes, message: Any) -> None:
                await faststream_forward(broker, body, message)

            self.broker = faststream_broker(self.url, self.prefetch, on_message)
            await self.broker.start()

    async def ready(self) -> str:
        if self.runtime is not None:
            return f"Runtime.ready()={self.runtime.ready()}"
        try:
            ok = await asyncio.wait_for(self.broker.ping(timeout=2), 3)
        except Exception as exc:
            ok = f"error {type(exc).__name__}"
        return f"broker.ping()={ok}"

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            if self.runtime is not None:
                await asyncio.wait_for(self.runtime.shutdown(grace=2), 15)
            if self.broker is not None:
                await asyncio.wait_for(self.broker.stop(), 15)


async def one_case(impl: str, mode: str, args: argparse.Namespace, vhost: str) -> dict[str, Any]:
    url = hoplib.amqp_url(vhost)
    await hoplib.preload(url, args.messages, args.size)
    proxy = CutProxy(hoplib.HOST, hoplib.PORT)
    port = await proxy.start()
    consumer = Consumer(impl, hoplib.amqp_url(vhost, "127.0.0.1", port), args.prefetch)
    result: dict[str, Any] = {"impl": impl, "mode": mode}
    try:
        await consumer.start()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if (await hoplib.depths(url, ["b"]))["b"] >= args.messages // 3:
                break
            await asyncio.sleep(0.05)
        result["ready_before"] = await consumer.ready()
        proxy.cut()
        if mode == "forced":
            ctl = await asyncio.create_subprocess_exec(
                "rabbitmqctl", "-q", "close_all_connections", "-p", vhost, "outage test",
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
            await asyncio.wait_for(ctl.wait(), 60)
        await asyncio.sleep(args.outage)
        result["ready_during"] = await consumer.ready()
        proxy.restore()
        restored = time.monotonic()
        depths, done_at = await wait_depths(url, args.messages, args.wait)
        result["backlog_done_s"] = round(done_at - restored, 1) if done_at else None
        await publish_direct(url, 20, args.size)
        depths, late_at = await wait_depths(url, args.messages + 20, args.wait if done_at else 5)
        result["late_20_consumed"] = late_at is not None
        result["a_left"], result["b"] = depths.get("a"), depths.get("b")
        result["duplicates"] = max((depths.get("b") or 0) - args.messages - 20, 0)
        result["recovered"] = done_at is not None and late_at is not None
        result["ready_after"] = await consumer.ready()
        result["connections_opened"] = proxy.accepted
    finally:
        await consumer.stop()
        await proxy.close()
        with contextlib.suppress(Exception):
            await hoplib.purge_queues(url, ["a", "b"])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impl", nargs="+", choices=["aiopika", "faststream"], default=["aiopika", "faststream"])
    parser.add_argument("--mode", nargs="+", choices=["tcp", "forced"], default=["tcp", "forced"])
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--size", type=int, default=10240)
    parser.add_argument("--prefetch", type=int, default=32)
    parser.add_argument("--outage", type=float, default=5.0)
    parser.add_argument("--wait", type=float, default=60.0, help="seconds to wait for recovery")
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="uvloop")
    args = parser.parse_args()
    if not 30 <= args.messages <= 50_000 or not 0 < args.outage <= 60 or not 0 < args.wait <= 300:
        parser.error("--messages 30..50000, --outage 0..60, --wait 0..300")
    rows = []
    with hoplib.private_vhost("mailmoat-hop-reconnect") as vhost:
        for impl in args.impl:
            for mode in args.mode:
                row = hoplib.run(lambda impl=impl, mode=mode: one_case(impl, mode, args, vhost), args.loop)
                print(row, flush=True)
                rows.append(row)
    print("\n| impl | outage | recovered | backlog done after (s) | late 20 consumed | duplicates | "
          "readiness during outage | readiness after | connections opened |")
    print("|---|---|---|---:|---|---:|---|---|---:|")
    for r in rows:
        print(f"| {r['impl']} | {r['mode']} {args.outage:g}s | {r['recovered']} | {r['backlog_done_s']} | "
              f"{r['late_20_consumed']} | {r['duplicates']} | {r['ready_during']} | {r['ready_after']} | "
              f"{r['connections_opened']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
