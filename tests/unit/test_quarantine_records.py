"""Pure parts of the quarantine in PostgreSQL and of the import from Redis: compression, storable JSON,
the trace record read back from the Redis indexes, the backend a setting picks."""

from __future__ import annotations

import pytest

from mailmoat_platform.models import TraceEvent
from mailmoat_platform.settings import Settings
from mailmoat_records.quarantine import open_quarantine
from mailmoat_records.quarantinedb import CODEC, QuarantineDB, compress, decompress
from mailmoat_records.redisimport import Imported, trace_record
from mailmoat_records.tracedb import clean_json


def test_compress_round_trip_and_unknown_codec() -> None:
    data = b"Subject: x\r\n\r\n" + bytes(range(256)) * 100
    packed = compress(data)
    assert len(packed) < len(data) and decompress(packed, CODEC) == data
    with pytest.raises(ValueError, match="unknown quarantine codec"):
        decompress(packed, "zstd")


def test_stored_json_has_no_nul() -> None:
    assert clean_json({"a\x00": ["x\x00y", 1, None, {"k": "\udcff"}]}) == \
        {"a\ufffd": ["x\ufffdy", 1, None, {"k": "\\xff"}]}


def test_open_quarantine_needs_redis_for_redis() -> None:
    with pytest.raises(ValueError):
        open_quarantine(Settings(records="redis"))
    assert isinstance(open_quarantine(Settings(records="postgresql")), QuarantineDB)  # not connected yet


def test_trace_record_from_the_redis_indexes() -> None:
    events = [TraceEvent(event="RECEIVE", message_id="Q1", service="ingress")]
    record = trace_record(events, {"sender": ["<>"], "rcpt": ["b@x.test", "a@x.test"], "msgid": ["m@x"],
                                   "ip": ["192.0.2.1"], "from": ["boss@x.test"]})
    assert record.sender == "" and record.recipients == ["a@x.test", "b@x.test"]
    assert record.message_id_header == "m@x" and record.client_ip == "192.0.2.1" and record.authors == ["boss@x.test"]
    later = trace_record(events, {})
    assert later.sender is None and later.recipients == [] and later.message_id_header is None


def test_import_counts_lines() -> None:
    done = Imported(quarantine_imported=2, quarantine_present=1)
    assert done.lines() == ["quarantine: 2 imported, 1 already there, 0 gone"]
    done.trace_messages, done.trace_events, done.trace_added, done.quarantine_removed = 1, 3, 0, 3
    assert done.lines() == ["quarantine: 2 imported, 1 already there, 0 gone, 3 removed from Redis",
                            "trace: 1 messages, 3 events, 0 new"]
