"""Shared pieces of the hop benchmarks: a private RabbitMQ vhost, test messages, preloading, loops."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import aio_pika

from mailmoat_platform.bus import Publish, stage_queue
from mailmoat_platform.models import Envelope, Verdict

HOST = os.environ.get("MAILMOAT_BENCH_RABBITMQ_HOST", "127.0.0.1")
PORT = int(os.environ.get("MAILMOAT_BENCH_RABBITMQ_PORT", "5672"))
ITINERARY = ["a", "b"]


def _ctl(*args: str, check: bool = True) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=check, capture_output=True, timeout=60)


SETTLE_SECONDS = 10.0
"""Pause between emptying quorum queues and deleting them. RabbitMQ 3.10's quorum log segment
writer crashes (badmatch enoent in ra_log_segment_writer, then its supervisor restarts the log
subsystem for every quorum queue on the node) when a queue is deleted while the truncation of
its segments, which follows consuming or purging it, is still pending."""


def _settle_and_delete(name: str) -> None:
    out = subprocess.run(["rabbitmqctl", "-q", "--no-table-headers", "list_queues", "-p", name, "name", "messages"],
                         capture_output=True, text=True, timeout=60).stdout
    for line in out.splitlines():
        parts = line.split("\t")
        if len(parts) == 2 and parts[1].strip() not in ("", "0"):
            _ctl("purge_queue", "-p", name, parts[0], check=False)
    time.sleep(SETTLE_SECONDS)
    _ctl("delete_vhost", name, check=False)


@contextlib.contextmanager
def private_vhost(prefix: str = "mailmoat-hop") -> Iterator[str]:
    """A vhost of this run only, emptied and deleted on exit (also on SIGTERM/SIGINT)."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"

    def _terminate(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, _terminate)
    _ctl("add_vhost", name)
    try:
        _ctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        yield name
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            _settle_and_delete(name)
        finally:
            signal.signal(signal.SIGTERM, previous)


def amqp_url(vhost: str, host: str = HOST, port: int = PORT) -> str:
    return f"amqp://guest:guest@{host}:{port}/{vhost}"


def make_data(size: int) -> bytes:
    """A plain RFC 5322 message of about ``size`` bytes (CRLF lines)."""
    head = (
        b"From: Sender <sender@example.org>\r\nTo: User <user@example.com>\r\n"
        b"Subject: hop benchmark\r\nMessage-ID: <hop@example.org>\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=us-ascii\r\n\r\n"
    )
    line = b"The quick brown fox jumps over the lazy dog, and the lazy dog lets it pass.\r\n"
    body = (line * (max(size - len(head), 0) // len(line) + 1))[: max(size - len(head), 0)]
    return head + body


def make_envelope(recipients: int = 1, local_len: int = 8, verdicts: bool = True) -> Envelope:
    """An envelope as routing would see it: ``recipients`` addresses and the filter verdicts."""
    rcpts = [f"{'u' * max(local_len - 6, 1)}{i:06d}@example.com" for i in range(recipients)]
    envelope = Envelope(
        client_ip="192.0.2.10",
        client_port=40000,
        helo="mail.example.org",
        mail_from="sender@example.org",
        rcpt_to=rcpts,
        size=10240,
        message_id_header="<hop@example.org>",
        itinerary=list(ITINERARY),
    )
    if verdicts:
        envelope.add_verdict(Verdict(stage="connection_filter", result="pass", detail={"ip": "192.0.2.10"}))
        envelope.add_verdict(Verdict(stage="antivirus", result="clean", detail={"engine": "clamd"}))
        envelope.add_verdict(Verdict(stage="antispam", result="ham", detail={"scl": 1, "bcl": 0, "rules": []}))
    return envelope


async def preload(url: str, count: int, size: int, queue_stage: str = "a", window: int = 256) -> None:
    """Put ``count`` framed messages of ``size`` bytes on the stage queue, confirmed, ``window`` at a time."""
    from mailmoat_platform.bus import Bus

    bus = Bus(url)
    await bus.connect()
    try:
        name = await bus.declare_stage(queue_stage)
        for stage in ITINERARY:
            await bus.declare_stage(stage)
        data = make_data(size)
        sent = 0
        while sent < count:
            batch = min(window, count - sent)
            await bus.publish_many([Publish(name, make_envelope(), data) for _ in range(batch)], timeout=60)
            sent += batch
    finally:
        await bus.close()


async def depths(url: str, stages: list[str]) -> dict[str, int]:
    """Ready + unacked-free message count of each stage queue (passive declare)."""
    connection = await aio_pika.connect(url, timeout=10)
    try:
        channel = await connection.channel()
        out = {}
        for stage in stages:
            queue = await channel.declare_queue(stage_queue(stage), passive=True)
            out[stage] = int(queue.declaration_result.message_count or 0)
        return out
    finally:
        await connection.close()


async def purge_queues(url: str, stages: list[str], settle: float = 3.0) -> None:
    """Empty the stage queues (kept for the next run; deleting them is left to the vhost's end)."""
    connection = await aio_pika.connect(url, timeout=10)
    try:
        channel = await connection.channel()
        for stage in stages:
            queue = await channel.get_queue(stage_queue(stage), ensure=False)
            await queue.purge()
    finally:
        await connection.close()
    await asyncio.sleep(settle)


def run(main: Callable[[], Awaitable[Any]], loop: str) -> Any:
    """Run ``main()`` on asyncio's default loop or on uvloop."""
    if loop == "uvloop":
        import uvloop

        return uvloop.run(main())
    return asyncio.run(main())


def loadavg() -> float:
    return os.getloadavg()[0]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


