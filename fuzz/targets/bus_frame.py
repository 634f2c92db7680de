"""What a stage reads of a delivery before its handler: the AMQP headers (pamqp's field-table decoding,
made total by ``amqpdecode``, then the runtime's readers: trace context, delivery count, headers
republished with a dead letter) and the body's frame (``bus.decode``).

Input: two bytes giving the length n of a raw AMQP field table, the n bytes of that table, then the
message body. A table that is not a well-formed field table may be refused with pamqp's ValueError
(the broker itself refuses to route such a publish); a body that is not a frame may be refused with
``FrameError``. Anything else raised is a bug: it would leave a delivery without an outcome. The body a
``Delivery`` gives for the dead-letter queue is the body as delivered, byte for byte, whether it was decoded
(and let go) or refused.
"""

from __future__ import annotations

import struct
from types import SimpleNamespace

from pamqp.encode import encode_table_value, field_table

from mailmoat_mail.headers import delivery_count, republishable
from mailmoat_mail.headers import text as header_text
from mailmoat_platform import amqpdecode
from mailmoat_platform.bus import Delivery, FrameError, decode, encode
from mailmoat_platform.models import Envelope, Route
from mailmoat_platform.runtime import envelope_problem
from mailmoat_platform.telemetry import extract, trace_context

amqpdecode.install()

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def _headers(raw: bytes) -> dict[str, object] | None:
    """The field table as the connection's reader decodes it; None when it is malformed."""
    try:
        _, table = amqpdecode.field_table(raw)
    except ValueError as exc:
        if isinstance(exc, UnicodeError):  # text is decoded escaped, never refused
            raise
        return None
    return table


def test_one_input(data: bytes) -> None:
    size = int.from_bytes(data[:2], "big")
    headers = _headers(data[2 : 2 + size])
    body = data[2 + size :]
    if headers is not None:
        carrier = trace_context(headers)
        assert all(isinstance(v, str) for v in carrier.values())
        extract(headers)
        assert delivery_count(headers) >= 0
        header_text(headers.get("x-mailmoat-id"))
        encode_table_value(republishable(headers))  # a dead letter can always carry them
    delivery = Delivery(SimpleNamespace(  # type: ignore[arg-type]  # what Delivery reads of aiormq's message
        header=SimpleNamespace(properties=SimpleNamespace(headers=headers, message_id=None)), body=body,
        delivery_tag=1, redelivered=False, channel=None))
    try:
        delivery.decode()
    except FrameError:
        pass
    assert delivery.body == body
    try:
        envelope, payload = decode(body)
    except FrameError:
        return
    envelope_problem(envelope)
    cut = len(payload) // 2  # a stage's report header goes in as a prefix, joined only in the frame
    again, payload_again = decode(encode(envelope, payload[cut:], payload[:cut]))
    assert again == envelope and payload_again == payload


def _input(headers: bytes, body: bytes) -> bytes:
    return len(headers).to_bytes(2, "big") + headers + body


def seeds() -> list[bytes]:
    data = b"From: s@example.org\r\nTo: a@example.com\r\nSubject: seed\r\n\r\nbody\r\n"
    envelope = Envelope(mail_from="s@example.org", rcpt_to=["a@example.com"], itinerary=["routing", "egress"],
                        route=Route(name="route:onprem", kind="smarthost", hosts=["127.0.0.1:25"], tls="none"))
    frame = encode(envelope, data)
    ours = field_table({"x-mailmoat-id": envelope.id, "traceparent": TRACEPARENT, "x-delivery-count": 2})
    key_not_utf8 = struct.pack(">I", 9) + b"\x05tr\xffce" + b"V" + b"\x01a" + b"V"
    timestamp_far = struct.pack(">I", 11) + b"\x01t" + b"T" + struct.pack(">Q", 2**63)
    trace_not_utf8 = struct.pack(">I", 20) + b"\x0btraceparent" + b"S" + struct.pack(">I", 3) + b"\xff\xfe\xfd"
    nested = field_table({"t": {"k": [1, "x", None, {"d": 1.5}]}, "b": True})
    deep = b""
    for _ in range(600):  # deeper than Python's recursion limit allows a recursive decoder
        deep = b"\x01k" + b"F" + struct.pack(">I", len(deep)) + deep
    deep = struct.pack(">I", len(deep)) + deep
    no_rcpt = encode(envelope.model_copy(update={"rcpt_to": []}), data)
    return [
        _input(ours, frame), _input(key_not_utf8, frame), _input(timestamp_far, frame),
        _input(trace_not_utf8, frame), _input(nested, no_rcpt), _input(b"", b"garbage"),
        _input(ours, frame[:12]), _input(ours, b"MM1\n\x00\x00\x00\x02{}"), _input(deep, frame),
    ]
