"""The suite's own guard: after every end-to-end test the vhost's ``mailmoat.dead`` must be empty
(tests/e2e/conftest.py, ``amqp_url``) unless the test is marked ``expects_dead_letter``."""

from __future__ import annotations

import asyncio

import pytest

from mailmoat_platform.bus import Bus, Publish
from mailmoat_platform.models import Envelope
from tests.e2e.conftest import dead_letters

pytestmark = pytest.mark.e2e


async def _dead_letter(url: str, reason: str) -> None:
    bus = Bus(url)
    await bus.connect()
    try:
        await bus.declare_stage("routing")  # declares the topology, mailmoat.dead included
        envelope = Envelope(mail_from="s@example.org", rcpt_to=["r@example.com"], itinerary=["routing", "egress"])
        await bus.publish(Publish("mailmoat.dead", envelope, b"Subject: x\r\n\r\nx\r\n",
                                  {"x-mailmoat-dead-reason": reason}))
    finally:
        await bus.close()


def test_no_queue_is_no_dead_letter(amqp_url: str) -> None:
    assert dead_letters(amqp_url) == (0, [])


@pytest.mark.expects_dead_letter
def test_dead_letters_are_counted_with_their_reasons(amqp_url: str) -> None:
    asyncio.run(_dead_letter(amqp_url, "antivirus: AttributeError: 'Header' object has no attribute 'split'"))
    assert dead_letters(amqp_url) == (1, ["antivirus: AttributeError: 'Header' object has no attribute 'split'"])
    assert dead_letters(amqp_url)[0] == 1  # looking does not consume
