"""AMQP header values and names as raw bytes, as a foreign publisher may send them.

pamqp (under aio-pika) encodes only valid text; ``RawText`` is a ``str`` whose UTF-8 encoding is the
bytes given, so a test can put a non-UTF-8 long string (or field name) into the headers it publishes;
``RawTimestamp`` a timestamp of any 64-bit value.
"""

from __future__ import annotations

import contextlib
import datetime
import struct
from collections.abc import Iterator

import pamqp.encode


class RawText(str):
    """A header value or field name that goes on the wire as exactly ``raw``."""

    raw: bytes

    def __new__(cls, raw: bytes) -> RawText:
        text = super().__new__(cls, raw.decode("latin-1"))
        text.raw = raw
        return text

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return self.raw


class RawTimestamp(datetime.datetime):
    """A timestamp header value that goes on the wire as ``seconds`` (any 64-bit value, also one no
    ``datetime`` can hold)."""

    seconds: int

    @classmethod
    def of(cls, seconds: int) -> RawTimestamp:
        value = cls(2000, 1, 1, tzinfo=datetime.UTC)
        value.seconds = seconds
        return value

    def timestamp(self) -> float:
        return self.seconds


class RawValue:
    """A header value that goes on the wire as exactly ``raw`` (type octet included), e.g. tables nested
    deeper than any encoder would recurse; publish it inside ``raw_values()``."""

    def __init__(self, raw: bytes):
        self.raw = raw

    @classmethod
    def nested_tables(cls, depth: int) -> RawValue:
        """``{"k": {"k": ... {}}}``, ``depth`` tables deep."""
        inner = b"F" + struct.pack(">I", 0)
        for _ in range(depth - 1):
            entry = b"\x01k" + inner
            inner = b"F" + struct.pack(">I", len(entry)) + entry
        return cls(inner)


@contextlib.contextmanager
def raw_values() -> Iterator[None]:
    """While inside, pamqp encodes ``RawValue`` header values as their raw bytes."""
    original = pamqp.encode.encode_table_value

    def encode_table_value(value: object) -> bytes:
        return value.raw if isinstance(value, RawValue) else original(value)  # type: ignore[arg-type]

    pamqp.encode.encode_table_value = encode_table_value  # type: ignore[assignment]
    try:
        yield
    finally:
        pamqp.encode.encode_table_value = original
