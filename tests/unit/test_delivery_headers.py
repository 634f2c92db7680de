"""Reading AMQP headers of any type (headers.py) and decoding properties no publisher can make fail
(amqpdecode.py): pure functions, no broker."""

from __future__ import annotations

import datetime
import struct
from decimal import Decimal

import pytest
from pamqp import frame, header
from pamqp.encode import encode_table_value

import mailmoat_platform.bus  # noqa: F401  (installs the total decoders)
from mailmoat_mail.headers import delivery_count, republishable, text
from mailmoat_platform.amqpdecode import MAX_DEPTH
from mailmoat_platform.models import Envelope
from mailmoat_platform.runtime import envelope_problem
from mailmoat_platform.telemetry import extract, trace_context

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_text_takes_strings_and_utf8_bytes_only() -> None:
    assert text("a") == "a"
    assert text(b"a") == "a" and text(bytearray(b"a")) == "a"
    assert text(b"\xff\xfe") is None
    for value in (7, 1.5, None, True, ["a"], {"a": "b"}, Decimal(1), datetime.datetime.now()):
        assert text(value) is None
    assert text("x" * 5000) is None and text("x" * 10, limit=5) is None


def test_delivery_count_is_a_non_negative_integer_or_zero() -> None:
    assert delivery_count({"x-delivery-count": 3}) == 3
    for value in ("3", b"3", -1, True, 1.0, None, [3]):
        assert delivery_count({"x-delivery-count": value}) == 0
    assert delivery_count(None) == 0 and delivery_count({}) == 0
    assert delivery_count("not a mapping") == 0  # type: ignore[arg-type]


def test_trace_context_skips_what_is_not_text() -> None:
    assert trace_context({"traceparent": TRACEPARENT}) == {"traceparent": TRACEPARENT}
    assert trace_context({"traceparent": TRACEPARENT.encode()}) == {"traceparent": TRACEPARENT}
    assert trace_context({"traceparent": b"00-\xff", "tracestate": 5}) == {}
    assert trace_context({"traceparent": {"nested": b"\x80"}}) == {}
    assert trace_context(None) == {} and trace_context([1]) == {}  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [b"00-\xff\xfe", "00-zz", "x" * 10000, 7, None, [TRACEPARENT], "\x00"])
def test_extract_never_raises(value: object) -> None:
    extract({"traceparent": value, "tracestate": value})


def test_republishable_keeps_what_pamqp_encodes_and_quotes_the_rest() -> None:
    headers = {
        "s": "text", "i": 5, "b": True, "d": Decimal("1.5"), "n": None, "t": {"k": "v"}, "a": [1, "x"],
        "x": bytearray(b"\xff"), "raw": b"\xff\xfe", "big": 1e300, "nested": {"k": b"\x80"}, "huge": 2**70,
    }
    out = republishable(headers)
    for key in ("s", "i", "b", "d", "n", "t", "a", "x"):
        assert out[key] == headers[key]
    assert out["raw"] == repr(b"\xff\xfe") and out["big"] == "1e+300" and out["huge"] == str(2**70)
    assert out["nested"] == repr({"k": b"\x80"})
    encode_table_value(out)  # the whole table encodes
    assert republishable(None) == {} and republishable("x") == {}  # type: ignore[arg-type]


def _content_header(properties: bytes, flags: int) -> bytes:
    """A content header frame (channel 1) with the raw property bytes given."""
    payload = struct.pack(">HHQH", 60, 0, 0, flags) + properties
    return struct.pack(">BHI", 2, 1, len(payload)) + payload + b"\xce"


def _table(raw: bytes) -> bytes:
    return struct.pack(">I", len(raw)) + raw


def test_a_header_field_name_that_is_not_utf8_is_decoded_escaped() -> None:
    table = _table(b"\x05tr\xffce" + b"S" + struct.pack(">I", 1) + b"v")
    _, _, decoded = frame.unmarshal(_content_header(table, 0x2000))
    assert isinstance(decoded, header.ContentHeader)
    assert decoded.properties.headers == {"tr\\xffce": "v"}
    encode_table_value(republishable(decoded.properties.headers))


def test_a_timestamp_no_datetime_can_hold_stays_an_integer() -> None:
    table = _table(b"\x01t" + b"T" + struct.pack(">Q", 2**63) + b"\x01u" + b"T" + struct.pack(">Q", 1))
    _, _, decoded = frame.unmarshal(_content_header(table, 0x2000))
    assert decoded.properties.headers == {"t": 2**63, "u": datetime.datetime(1970, 1, 1, 0, 0, 1, tzinfo=datetime.UTC)}


def test_a_message_id_that_is_not_utf8_is_decoded_escaped() -> None:
    _, _, decoded = frame.unmarshal(_content_header(b"\x02\xff\xfe", 0x0080))
    assert decoded.properties.message_id == "\\xff\\xfe"


def test_an_envelope_without_recipients_is_a_problem() -> None:
    assert envelope_problem(Envelope(rcpt_to=[], itinerary=["egress"])) == "envelope without recipients"
    assert envelope_problem(Envelope(rcpt_to=["a@example.com"], itinerary=["egress"])) is None


@pytest.mark.parametrize("kind", [b"F", b"A"])
def test_tables_nested_deeper_than_the_limit_stay_raw_bytes(kind: bytes) -> None:
    inner = b""
    for _ in range(3000):  # Python's recursion limit is 1000 frames
        inner = (b"\x01k" if kind == b"F" else b"") + kind + struct.pack(">I", len(inner)) + inner
    inner = inner if kind == b"F" else b"\x01k" + inner
    _, _, decoded = frame.unmarshal(_content_header(_table(inner), 0x2000))
    value = decoded.properties.headers
    for _ in range(MAX_DEPTH):
        value = value["k"] if kind == b"F" else (value["k"] if isinstance(value, dict) else value[0])
    assert isinstance(value, bytes)
    encode_table_value(republishable(decoded.properties.headers))


def test_an_itinerary_naming_a_stage_twice_is_a_problem() -> None:
    looping = Envelope(rcpt_to=["a@example.com"], itinerary=["routing", "egress", "routing"])
    assert envelope_problem(looping) == "itinerary names a stage twice: ['routing', 'egress', 'routing']"
