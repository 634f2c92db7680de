"""The bus frame keeps message bytes exact and the envelope whole."""

from __future__ import annotations

import pytest

from mailmoat_platform.bus import FrameError, Publish, decode, encode
from mailmoat_platform.models import Envelope, new_message_id


def test_roundtrip_is_byte_exact_for_any_bytes() -> None:
    data = bytes(range(256)) * 4 + b"\r\n.\r\n" + "ü".encode()
    envelope = Envelope(mail_from="", rcpt_to=[f"u{i}@example.com" for i in range(500)], itinerary=["routing"])
    got_envelope, got_data = decode(encode(envelope, data))
    assert got_data == data
    assert got_envelope == envelope


@pytest.mark.parametrize("prefix", [b"", b"X-Report: clean\r\n"])
def test_a_prefix_is_joined_in_the_frame_only(prefix: bytes) -> None:
    data = b"Subject: x\r\n\r\nhi\r\n"
    envelope = Envelope(mail_from="", rcpt_to=["u@example.com"], itinerary=["routing"])
    publish = Publish("mailmoat.routing", envelope, data, prefix=prefix)
    assert publish.data is data and publish.message == prefix + data
    assert decode(encode(envelope, data, prefix)) == (envelope, prefix + data)


@pytest.mark.parametrize("body", [b"", b"hello", b"MM1\n\x00\x00\x10\x00{}", b"MM1\n\x00\x00\x00\x02{}"])
def test_bad_frames_are_refused(body: bytes) -> None:
    with pytest.raises(FrameError):
        decode(body)


def test_message_ids_are_unique_and_sortable() -> None:
    ids = [new_message_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 26 for i in ids)
    assert sorted(ids)[0][:8] <= ids[-1][:8]
