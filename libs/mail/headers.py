"""Reading the AMQP headers of a delivery, whatever a publisher put there.

A delivery's headers come from anyone who can publish to a stage queue, decoded by pamqp: a field
may hold text, bytes that were not UTF-8, numbers, booleans, decimals, timestamps, nested tables or
arrays, or nothing. The runtime reads a few of them (trace context, the broker's delivery count) and
copies them onto a message it republishes or dead-letters; every function here accepts any value and
never raises, so a header can never keep a delivery from reaching an outcome.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pamqp.encode import encode_table_value

MAX_TEXT = 4096
"""Longest header text read as a trace context field (a W3C ``traceparent`` is 55 characters)."""


def text(value: object, limit: int = MAX_TEXT) -> str | None:
    """A header value as text: a string, or bytes that are UTF-8; None for anything else (other
    types, undecodable bytes, longer than ``limit``)."""
    if isinstance(value, (bytes, bytearray)):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return None
    if not isinstance(value, str) or len(value) > limit:
        return None
    return value


def delivery_count(headers: Mapping[str, Any] | None) -> int:
    """How often the broker delivered this message before (its ``x-delivery-count``); 0 when the
    header is absent or not a non-negative integer."""
    value = (headers or {}).get("x-delivery-count") if isinstance(headers, Mapping) else None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return 0
    return value


def republishable(headers: Mapping[str, Any] | None) -> dict[str, Any]:
    """The headers as they can be published again: each field pamqp cannot encode as it was decoded
    (bytes that were not UTF-8, a double beyond a float's range, a timestamp before 1970…) is kept as
    its ``repr``, so nothing of the original is dropped and the publish cannot fail on it."""
    if not isinstance(headers, Mapping):
        return {}
    out: dict[str, Any] = {}
    for key, value in headers.items():
        name = key if isinstance(key, str) else repr(key)
        try:
            encode_table_value(value)
        except Exception:  # pamqp raises TypeError, struct.error, OverflowError, ValueError…
            value = repr(value)[:MAX_TEXT]
        out[name] = value
    return out


PUBLISHED = "x-mailmoat-published-ms"
"""Header the bus sets on every publish: the wall-clock time of the publish, in epoch milliseconds."""


def queue_wait(headers: Mapping[str, Any] | None, redelivered: bool | None, now: float) -> float | None:
    """Seconds a delivery waited in its queue since it was published (``now`` in epoch seconds; 0 when
    clocks disagree), or None when that is not queue wait: no readable publish time, a redelivery
    (its wait includes an earlier attempt), or a message back from a delay queue (its latest
    ``x-death`` is not older than its publish: the wait was the scheduled retry delay). An ``x-death``
    older than the publish is one a republished copy carried along, and does not count."""
    if redelivered or not isinstance(headers, Mapping):
        return None
    value = headers.get(PUBLISHED)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return None
    if "x-death" in headers:
        died = _latest_death(headers["x-death"])
        if died is None or died >= value // 1000:  # x-death times are whole seconds
            return None
    return max(0.0, now - value / 1000)


def _latest_death(value: object) -> float | None:
    """Epoch seconds of the latest dead-lettering an ``x-death`` header records (None: unreadable)."""
    if not isinstance(value, list) or not value or not isinstance(value[0], Mapping):
        return None
    when = value[0].get("time")
    if isinstance(when, datetime):
        return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()
    return None
