"""pamqp's decoding of message properties, made total: no publisher can break a consumer's connection.

aiormq decodes each delivery's content header (properties and headers) with pamqp in the
connection's reader, before any consumer sees it. pamqp raises there for a header field name or a
short-string property (``message_id``, ``content_type``…) that is not UTF-8, for a timestamp
beyond the year 9999, and (RecursionError) for tables or arrays nested a few hundred deep; aiormq then
closes the whole connection, the broker delivers the message again to the reconnected consumer, and
the consumer is wedged for good — by one message anyone with publish rights can send. ``install``
replaces those decoders with ones that cannot fail on such input: undecodable text becomes text with
``\\xNN`` escapes, an unrepresentable timestamp stays the integer it was, a table or array nested
deeper than ``MAX_DEPTH`` stays its raw bytes. Everything else pamqp decodes as before.
"""

from __future__ import annotations

import datetime
import struct
import threading
from collections.abc import Callable
from typing import TypeVar

from pamqp import common
from pamqp import decode as _decode

MAX_DEPTH = 32
"""Tables and arrays nested deeper than this are kept as their raw bytes, not decoded."""

_installed = False
_nesting = threading.local()
_T = TypeVar("_T")


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "backslashreplace")


def short_str(value: bytes) -> tuple[int, str]:
    """pamqp's ``short_str``; bytes that are not UTF-8 come out escaped."""
    try:
        length = common.Struct.byte.unpack(value[0:1])[0]
    except (struct.error, TypeError) as err:
        raise ValueError("Could not unpack short string value") from err
    return length + 1, _text(value[1 : length + 1])


def timestamp(value: bytes) -> tuple[int, datetime.datetime | int]:
    """pamqp's ``timestamp``; a value no ``datetime`` can hold stays the integer it was."""
    try:
        raw = common.Struct.timestamp.unpack(value[0:8])[0]
    except (struct.error, TypeError) as err:
        raise ValueError("Could not unpack timestamp value") from err
    seconds = raw / 1000.0 if raw > 0xFFFFFFFF else raw  # pamqp: above 2106 it is likely milliseconds
    try:
        return 8, datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)
    except (OverflowError, ValueError, OSError):
        return 8, raw


def _too_deep(value: bytes) -> tuple[int, bytes] | None:
    """(bytes consumed, the raw bytes) of a table or array nested deeper than ``MAX_DEPTH``, else None."""
    if getattr(_nesting, "depth", 0) < MAX_DEPTH:
        return None
    try:
        length = common.Struct.integer.unpack(value[0:4])[0]
    except (struct.error, TypeError) as err:
        raise ValueError("Could not unpack data") from err
    if 4 + length > len(value):
        raise ValueError("Nested table length exceeds available data")
    return 4 + length, bytes(value[4 : 4 + length])


def _nested(value: bytes, what: str, items: Callable[[bytes, int], tuple[int, _T]]) -> tuple[int, _T | bytes]:
    """Decode a table or array (``what``): its length, then ``items(value, end)`` for what follows it,
    one level deeper; nested deeper than ``MAX_DEPTH``, the raw bytes."""
    raw = _too_deep(value)
    if raw is not None:
        return raw
    _nesting.depth = getattr(_nesting, "depth", 0) + 1
    try:
        length = common.Struct.integer.unpack(value[0:4])[0]
        end = 4 + length
        if end > len(value):
            raise ValueError(f"Field {what} length exceeds available data")
        return items(value, end)
    except (struct.error, TypeError) as err:
        raise ValueError("Could not unpack data") from err
    finally:
        _nesting.depth -= 1


def _table_items(value: bytes, end: int) -> tuple[int, common.FieldTable]:
    offset = 4
    data: dict[str, common.FieldValue] = {}
    while offset < end:
        key_length = common.Struct.byte.unpack_from(value, offset)[0]
        offset += 1
        if offset + key_length > end:
            raise ValueError("Field table key length exceeds data")
        key = _text(value[offset : offset + key_length])
        offset += key_length
        consumed, result = _decode.embedded_value(value[offset:])
        offset += consumed
        data[key] = result
    return end, data


def _array_items(value: bytes, end: int) -> tuple[int, common.FieldArray]:
    offset = 4
    data: list[common.FieldValue] = []
    while offset < end:
        consumed, result = _decode.embedded_value(value[offset:])
        offset += consumed
        data.append(result)
    return offset, data


def field_table(value: bytes) -> tuple[int, common.FieldTable | bytes]:
    """pamqp's ``field_table``; field names that are not UTF-8 come out escaped; nested deeper than
    ``MAX_DEPTH``, the raw bytes."""
    return _nested(value, "table", _table_items)


def field_array(value: bytes) -> tuple[int, common.FieldArray | bytes]:
    """pamqp's ``field_array``; nested deeper than ``MAX_DEPTH``, the raw bytes."""
    return _nested(value, "array", _array_items)


def install() -> None:
    """Put the total decoders in place of pamqp's own (once per process)."""
    global _installed
    if _installed:
        return
    _decode.short_str = short_str  # type: ignore[assignment]
    _decode.timestamp = timestamp  # type: ignore[assignment]
    _decode.field_table = field_table  # type: ignore[assignment]
    _decode.field_array = field_array  # type: ignore[assignment]
    _decode.METHODS.update({"shortstr": short_str, "timestamp": timestamp, "table": field_table})
    _decode.TABLE_MAPPING.update({b"T": timestamp, b"F": field_table, b"A": field_array})
    _installed = True
