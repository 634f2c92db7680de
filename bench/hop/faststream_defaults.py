"""What FastStream 0.7 does with its defaults: queue type, publish persistence, prefetch, errors, decoding.

A subscriber declared with nothing but a queue name, a handler that fails on every message, and
``broker.publish`` with default arguments; the facts are read back from the broker (rabbitmqctl)
and from the delivered messages. Runs in a vhost of its own.

    .venv/bin/python bench/hop/faststream_defaults.py
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import Any

import aio_pika
import hoplib


def ctl_rows(*args: str) -> list[list[str]]:
    out = subprocess.run(["rabbitmqctl", "-q", "--no-table-headers", *args], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    return [line.split("\t") for line in out.splitlines() if line.strip()]


async def check(vhost: str) -> dict[str, Any]:
    from faststream.rabbit import RabbitBroker

    url = hoplib.amqp_url(vhost)
    facts: dict[str, Any] = {}
    seen: list[Any] = []
    broker = RabbitBroker(url, logger=None)

    @broker.subscriber("defaults.fails")
    async def fails(body: Any) -> None:
        seen.append(body)
        raise ValueError("handler failed")

    received: list[aio_pika.abc.AbstractIncomingMessage] = []
    await broker.start()
    try:
        # Publish with defaults to a queue read by plain aio-pika, to see the message properties.
        connection = await aio_pika.connect(url, timeout=10)
        channel = await connection.channel()
        probe = await channel.declare_queue("defaults.probe", durable=True)
        await broker.publish(b"MM1\n\x00\x00\x00\x02{}raw", queue="defaults.probe")
        await broker.publish(b'{"looks": "like json"}', queue="defaults.fails")
        for _ in range(4):
            await broker.publish(b"MM1\n\x00\x00\x00\x02{}raw", queue="defaults.fails")
        for _ in range(100):
            got = await probe.get(no_ack=True, fail=False, timeout=5)
            if got is not None:
                received.append(got)
                break
            await asyncio.sleep(0.05)
        for _ in range(200):
            if len(seen) >= 5:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)
        facts["queue (type, durable)"] = {r[0]: (r[1], r[2]) for r in ctl_rows("list_queues", "-p", vhost,
                                                                               "name", "type", "durable")}
        facts["consumer prefetch_count (0 = unbounded)"] = {
            r[0]: r[1] for r in ctl_rows("list_consumers", "-p", vhost, "queue_name", "prefetch_count")
        }
        facts["publish delivery_mode (1 transient, 2 persistent)"] = (
            received[0].delivery_mode.value if received else None
        )
        facts["handler calls for 5 failing messages"] = len(seen)
        facts["body types the handler got"] = sorted({type(b).__name__ for b in seen})
        depth = {r[0]: int(r[1]) for r in ctl_rows("list_queues", "-p", vhost, "name", "messages")}
        facts["messages left in defaults.fails after the failures"] = depth.get("defaults.fails")
        await connection.close()
    finally:
        await broker.stop()
    return facts


def main() -> int:
    with hoplib.private_vhost("mailmoat-hop-fsdefaults") as vhost:
        facts = hoplib.run(lambda: check(vhost), "asyncio")
    for key, value in facts.items():
        print(f"{key}: {json.dumps(value)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
