"""Throughput of one stage hop: consume from queue A, publish to queue B with a confirm, ack A.

Queues are the project's durable quorum stage queues (``mailmoat.a`` -> ``mailmoat.b``) in a vhost
of this run only. For every run, ``--messages`` framed messages of ``--size`` bytes are preloaded
into A; then a consumer with prefetch ``--prefetch`` moves them to B. Reported: msgs/s between the
first delivery and the N-th ack, and the consumer process's CPU time per message.

Implementations:

* ``aiopika``: the project's own ``Runtime.consume_stage`` with a handler returning
  ``[stage_publish(envelope, data, "a")]`` (decode frame, span, publish persistent with confirm,
  ack after the confirm, metrics) — the real code path of every stage.
* ``faststream``: FastStream 0.7 ``RabbitBroker`` configured like the bus: quorum queue with the
  same arguments, channel prefetch, ``AckPolicy.MANUAL`` (ack after the confirmed publish, nack
  with requeue on error), persistent publishes on a confirming channel, a raw-bytes decoder (no
  JSON parse), per-message logging off.
* ``faststream-lean``: the same without FastStream's dependency injection (``apply_types=False``,
  the message taken from its context), the cheapest way found to run a FastStream subscriber.
* ``bare``: aio-pika without the runtime (frame decode/encode, publish with confirm, ack), to show
  what the runtime itself costs.

    .venv/bin/python bench/hop/stage_hop.py --impl aiopika --loop uvloop --messages 20000 --prefetch 32
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from typing import Any

import aio_pika
import hoplib

from mailmoat_platform.bus import Publish, decode, encode, stage_queue
from mailmoat_platform.models import Envelope
from mailmoat_platform.runtime import Runtime, stage_publish
from mailmoat_platform.settings import Settings

STAGE_ARGS = {"x-queue-type": "quorum", "x-delivery-limit": 5, "x-dead-letter-exchange": "mailmoat.dlx"}


class Probe:
    """Counts finished messages; notes the first delivery and the N-th finish."""

    def __init__(self, target: int):
        self.target = target
        self.done = 0
        self.first: float | None = None
        self.last: float | None = None
        self.finished = asyncio.Event()

    def started(self) -> None:
        if self.first is None:
            self.first = time.perf_counter()

    def finish(self) -> None:
        self.done += 1
        if self.done == self.target:
            self.last = time.perf_counter()
            self.finished.set()


class CountingRuntime(Runtime):
    """The project's runtime, counting each message after ``_process`` returned (after the ack)."""

    probe: Probe

    async def _process(self, stage: str, queue: str, handler: Any, message: Any) -> None:
        self.probe.started()
        await super()._process(stage, queue, handler, message)
        self.probe.finish()


async def hop_aiopika(url: str, prefetch: int, probe: Probe, timeout: float) -> None:
    settings = Settings(amqp_url=url, log_format="text", log_level="WARNING")
    runtime = CountingRuntime("benchhop", settings, prefetch=prefetch)
    runtime.probe = probe

    async def handler(envelope: Envelope, data: bytes) -> list[Publish]:
        return [stage_publish(envelope, data, "a")]

    await runtime.start()
    try:
        await runtime.bus.declare_stage("b")
        await runtime.consume_stage("a", handler)
        await asyncio.wait_for(probe.finished.wait(), timeout)
    finally:
        await runtime.shutdown(grace=5)


async def hop_bare(url: str, prefetch: int, probe: Probe, timeout: float) -> None:
    connection = await aio_pika.connect_robust(url, timeout=10)
    try:
        channel = await connection.channel(publisher_confirms=True)
        await channel.set_qos(prefetch_count=prefetch)
        queue = await channel.declare_queue(stage_queue("a"), durable=True, arguments=STAGE_ARGS)

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            probe.started()
            try:
                envelope, data = decode(message.body)
                out = stage_publish(envelope, data, "a")
                await channel.default_exchange.publish(
                    aio_pika.Message(
                        encode(out.envelope, out.data),
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        message_id=envelope.id,
                        content_type="application/x-mailmoat-frame",
                        headers={"x-mailmoat-id": envelope.id},
                    ),
                    routing_key=out.queue,
                    timeout=30,
                )
                await message.ack()
            except Exception:
                await message.nack(requeue=True)
                raise
            probe.finish()

        await queue.consume(on_message, no_ack=False)
        await asyncio.wait_for(probe.finished.wait(), timeout)
    finally:
        await connection.close()


def faststream_broker(
    url: str, prefetch: int, on_message: Any, *, default_logging: bool = False, lean: bool = False
) -> Any:
    """A FastStream broker whose one subscriber moves ``mailmoat.a`` to ``mailmoat.b`` like a stage.

    ``lean``: no dependency injection (``apply_types=False``); the handler takes the message from the
    context itself instead of by annotation, which FastStream resolves in a worker thread per message.
    """
    from faststream import AckPolicy
    from faststream.rabbit import Channel, QueueType, RabbitBroker, RabbitMessage, RabbitQueue

    options: dict[str, Any] = {} if default_logging else {"logger": None}
    if lean:
        options["apply_types"] = False
    broker = RabbitBroker(url, **options)
    queue = RabbitQueue(stage_queue("a"), queue_type=QueueType.QUORUM, durable=True,
                        arguments={k: v for k, v in STAGE_ARGS.items() if k != "x-queue-type"})

    async def raw(message: Any) -> bytes:
        return message.body

    async def hop(body: bytes, message: RabbitMessage) -> None:
        try:
            await on_message(broker, body, message)
        except Exception:
            await message.nack(requeue=True)
            raise

    async def hop_lean(body: bytes) -> None:
        message = broker.context.get_local("message")
        try:
            await on_message(broker, body, message)
        except Exception:
            await message.nack(requeue=True)
            raise

    # FastStream's dependency injection resolves annotations when the first message arrives; with
    # postponed annotations a locally imported type must be given as an object.
    hop.__annotations__ = {"body": bytes, "message": RabbitMessage, "return": None}
    handler = hop_lean if lean else hop
    broker.subscriber(queue, channel=Channel(prefetch_count=prefetch), ack_policy=AckPolicy.MANUAL,
                      decoder=raw)(handler)
    return broker


async def faststream_forward(broker: Any, body: bytes, message: Any) -> str:
    """The stage work in FastStream terms: decode, publish the next frame persistently (confirmed), ack."""
    envelope, data = decode(body)
    out = stage_publish(envelope, data, "a")
    await broker.publish(
        encode(out.envelope, out.data),
        queue=out.queue,
        persist=True,
        message_id=envelope.id,
        content_type="application/x-mailmoat-frame",
        headers={"x-mailmoat-id": envelope.id},
        timeout=30,
    )
    await message.ack()
    return envelope.id


async def hop_faststream(
    url: str, prefetch: int, probe: Probe, timeout: float, default_logging: bool, lean: bool
) -> None:
    async def on_message(broker: Any, body: bytes, message: Any) -> None:
        probe.started()
        await faststream_forward(broker, body, message)
        probe.finish()

    broker = faststream_broker(url, prefetch, on_message, default_logging=default_logging, lean=lean)
    await broker.start()
    try:
        await asyncio.wait_for(probe.finished.wait(), timeout)
    finally:
        await broker.stop()


async def one_run(args: argparse.Namespace, url: str) -> dict[str, Any]:
    await hoplib.preload(url, args.messages, args.size)
    probe = Probe(args.messages)
    timeout = max(60.0, args.messages / 50)
    cpu0 = time.process_time()
    if args.impl == "aiopika":
        await hop_aiopika(url, args.prefetch, probe, timeout)
    elif args.impl == "bare":
        await hop_bare(url, args.prefetch, probe, timeout)
    else:
        await hop_faststream(url, args.prefetch, probe, timeout, args.fs_default_logging,
                             args.impl == "faststream-lean")
    cpu = time.process_time() - cpu0
    assert probe.first is not None and probe.last is not None
    elapsed = probe.last - probe.first
    left = await hoplib.depths(url, ["a", "b"])
    await hoplib.purge_queues(url, ["a", "b"])
    if left["a"] != 0 or left["b"] < args.messages:
        raise RuntimeError(f"queues after the run: {left} (expected a=0, b>={args.messages})")
    return {
        "msgs_per_s": round((args.messages - 1) / elapsed, 1),
        "seconds": round(elapsed, 3),
        "cpu_us_per_msg": round(cpu / args.messages * 1e6, 1),
        "b_count": left["b"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impl", choices=["aiopika", "faststream", "faststream-lean", "bare"], default="aiopika")
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="uvloop")
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--size", type=int, default=10240, help="message bytes (the frame adds the envelope)")
    parser.add_argument("--prefetch", type=int, default=32)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--fs-default-logging", action="store_true",
                        help="faststream: keep its default per-message INFO logging")
    parser.add_argument("--json", action="store_true", help="print one JSON line instead of text")
    args = parser.parse_args()
    if not 1 <= args.messages <= 200_000 or not 1 <= args.runs <= 20:
        parser.error("--messages must be 1..200000 and --runs 1..20")
    logging.basicConfig(level=logging.WARNING)

    results = []
    with hoplib.private_vhost() as vhost:
        url = hoplib.amqp_url(vhost)
        for _ in range(args.runs):
            load = hoplib.loadavg()
            result = hoplib.run(lambda: one_run(args, url), args.loop)
            result["load1"] = round(load, 2)
            results.append(result)
            if not args.json:
                print(f"{args.impl:10} {args.loop:8} prefetch={args.prefetch:<4} {result['msgs_per_s']:9.1f} msgs/s"
                      f"  {result['cpu_us_per_msg']:7.1f} us CPU/msg  load1={result['load1']}", flush=True)
    summary = {
        "impl": args.impl, "loop": args.loop, "prefetch": args.prefetch, "messages": args.messages,
        "size": args.size, "runs": results,
        "median_msgs_per_s": hoplib.median([r["msgs_per_s"] for r in results]),
        "median_cpu_us_per_msg": hoplib.median([r["cpu_us_per_msg"] for r in results]),
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"median: {summary['median_msgs_per_s']:.1f} msgs/s, {summary['median_cpu_us_per_msg']:.1f} us CPU/msg")
    return 0


if __name__ == "__main__":
    sys.exit(main())
