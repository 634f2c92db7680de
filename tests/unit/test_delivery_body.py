"""A delivery read by a stage: the envelope and bytes out of its body, the body itself let go, and the body
as delivered still there for the dead-letter queue."""

from __future__ import annotations

import sys
from types import SimpleNamespace
from typing import Any

import pytest

from mailmoat_platform.bus import Delivery, FrameError, encode
from mailmoat_platform.models import Envelope


def _delivered(body: bytes) -> Any:
    properties = SimpleNamespace(headers={"x-mailmoat-id": "m1"}, message_id="m1")
    return SimpleNamespace(header=SimpleNamespace(properties=properties), body=body, delivery_tag=7,
                           redelivered=False, channel=None)


def test_decoding_lets_the_body_go_and_keeps_it_readable_as_delivered() -> None:
    envelope = Envelope(id="m1", mail_from="a@example.org", rcpt_to=["b@example.net"], itinerary=["antispam"])
    data = b"Subject: hi\r\n\r\n" + b"x" * 100_000
    body = encode(envelope, data)
    delivery = Delivery(_delivered(body))
    held = sys.getrefcount(body)
    decoded, message = delivery.decode()
    assert sys.getrefcount(body) == held - 1  # the delivery no longer holds the body
    assert (decoded, message) == (envelope, data)
    decoded.verdicts.clear()
    decoded.rcpt_to.append("changed@example.net")  # what the stage does to its envelope is not the body
    assert delivery.body == body
    assert delivery.decode()[0] is decoded


def test_a_body_that_is_no_frame_stays_as_it_came() -> None:
    delivery = Delivery(_delivered(b"not a frame at all"))
    with pytest.raises(FrameError):
        delivery.decode()
    assert delivery.body == b"not a frame at all"
