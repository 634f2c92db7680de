"""Helpers of the verdict-action end-to-end tests: trace polling, the quarantine command, bus publishing."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

from mailmoat_platform.bus import Bus, Publish, stage_queue
from mailmoat_platform.models import Envelope
from tests.support import records
from tests.support.infra import REDIS_TEST_URL


def wait_event(message_id: str, event: str, timeout: float = 30, service: str | None = None) -> dict:
    """The first trace event ``event`` (of ``service``) of a message, waiting for it (AssertionError on timeout)."""
    return records.wait_event(message_id, event, timeout, service)


def events_of(message_id: str) -> list[str]:
    return records.event_names(message_id)


def quarantine_cli(amqp_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``mailmoat quarantine ...`` as the operator would, against the test broker and records."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILMOAT_")}
    env.update(MAILMOAT_AMQP_URL=amqp_url, MAILMOAT_REDIS_URL=REDIS_TEST_URL, MAILMOAT_DATABASE_URL=records.URL)
    return subprocess.run([sys.executable, "-m", "mailmoat_cli.main", "quarantine", *args], env=env,
                          capture_output=True, text=True, timeout=60)


def publish_to_routing(amqp_url: str, items: list[tuple[Envelope, bytes]]) -> None:
    async def run() -> None:
        bus = Bus(amqp_url)
        await bus.connect()
        try:
            for envelope, data in items:
                await bus.publish(Publish(stage_queue("routing"), envelope, data))
        finally:
            await bus.close()

    asyncio.run(run())


def id_by_msgid(msgid: str, timeout: float = 30) -> str:
    """The queue id of the message with this Message-ID header, waiting for its first trace record."""
    return records.wait_id("msgid", msgid, timeout)
