"""The trace writer's pure parts: event keys, look-up values, queue id times, cursors, partition days."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from mailmoat_platform.models import TraceEvent, new_message_id
from mailmoat_records import db
from mailmoat_records.tracedb import (
    Cursor,
    TraceRecord,
    clean_text,
    event_row,
    ip_text,
    queue_id_time,
    record_keys,
)

AT = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


def _event(**changes: object) -> TraceEvent:
    fields: dict[str, object] = {"event": "DELIVER", "message_id": "Q1", "service": "egress", "at": AT,
                                 "recipients": ["a@example.com"], "detail": "250 ok", "data": {"b": 1, "a": [2]}}
    fields.update(changes)
    return TraceEvent(**fields)  # type: ignore[arg-type]


def test_event_key_is_the_same_for_the_same_event_after_a_round_trip() -> None:
    event = _event()
    again = TraceEvent.model_validate_json(event.model_dump_json())
    assert event_row(again)[-1] == event_row(event)[-1]
    assert isinstance(event_row(event)[-1], int)
    # The data's key order does not matter; the same instant in another zone is the same event.
    assert event_row(_event(data={"a": [2], "b": 1}))[-1] == event_row(event)[-1]
    assert event_row(_event(at=AT.astimezone(timezone(timedelta(hours=2)))))[-1] == event_row(event)[-1]


@pytest.mark.parametrize("change", [
    {"event": "FAIL"}, {"message_id": "Q2"}, {"service": "routing"}, {"at": AT + timedelta(microseconds=1)},
    {"recipients": ["b@example.com"]}, {"detail": "251 ok"}, {"data": {"b": 2, "a": [2]}},
])
def test_event_key_differs_when_any_field_differs(change: dict[str, object]) -> None:
    assert event_row(_event(**change))[-1] != event_row(_event())[-1]


def test_event_row_columns() -> None:
    at, mid, name, service, rcpts, detail, data, _ = event_row(_event(data={"z": "é", "a": None}))
    assert (at, mid, name, service, rcpts, detail) == (AT, "Q1", "DELIVER", "egress", ["a@example.com"], "250 ok")
    assert data == '{"a":null,"z":"é"}'


def test_record_keys_are_normalised_and_unique() -> None:
    record = TraceRecord(events=[_event()], sender="<Alice@Example.ORG>",
                         recipients=["Bob@example.com", "bob@example.com ", ""], message_id_header=" <X1@Host> ",
                         client_ip="2001:DB8:0::1", authors=["CEO@example.org", ""])
    assert record_keys(record) == [("sender", "alice@example.org"), ("rcpt", "bob@example.com"),
                                   ("msgid", "x1@host"), ("ip", "2001:db8::1"), ("from", "ceo@example.org")]
    assert record_keys(TraceRecord(events=[_event()], sender="")) == [("sender", "<>")]
    assert record_keys(TraceRecord(events=[_event()])) == []
    assert record_keys(TraceRecord(events=[_event()], client_ip="unknown")) == []


def test_ip_text() -> None:
    assert ip_text("192.0.2.1") == "192.0.2.1"
    assert ip_text("[2001:db8::0:1]") == "2001:db8::1"
    assert ip_text("example.com") is None
    assert ip_text(None) is None


def test_clean_text_makes_any_string_storable() -> None:
    assert clean_text("plain") == "plain"
    assert clean_text("a\x00b") == "a\ufffdb"
    assert clean_text("caf\udce9") == "caf\\xe9"  # a byte kept as a surrogate escape
    assert clean_text("x\ud800") == "x\\ud800"
    clean_text("x\ud800\udcff\x00").encode("utf-8")


def test_queue_id_time_reads_the_gateway_queue_ids() -> None:
    before = datetime.now(UTC)
    made = queue_id_time(new_message_id())
    assert made is not None
    assert before - timedelta(seconds=1) <= made <= datetime.now(UTC) + timedelta(seconds=1)
    assert queue_id_time("not-a-queue-id") is None
    assert queue_id_time("01ARZ3NDEKTSV4RRFFQ69G5FAV") == datetime(2016, 7, 30, 23, 54, 10, 259000, tzinfo=UTC)


def test_cursor_token_round_trip() -> None:
    cursor = Cursor(AT, "01ARZ3NDEKTSV4RRFFQ69G5FAV")
    assert Cursor.parse(cursor.token) == cursor
    assert Cursor.parse("2026-03-01T12:00:00|Q|x") == Cursor(datetime(2026, 3, 1, 12, tzinfo=UTC), "Q|x")
    with pytest.raises(ValueError):
        Cursor.parse("2026-03-01T12:00:00")
    with pytest.raises(ValueError):
        Cursor.parse("yesterday|Q")


def test_partition_days_and_retention() -> None:
    assert db.partition_name("trace_events", date(2026, 3, 1)) == "trace_events_p20260301"
    assert db.day_of(datetime(2026, 3, 1, 23, 30, tzinfo=timezone(timedelta(hours=-2)))) == date(2026, 3, 2)
    assert db.first_kept_day(90, date(2026, 3, 31)) == date(2025, 12, 31)


def test_sqlalchemy_url() -> None:
    assert db.sqlalchemy_url("postgresql://u:p@h:5432/d") == "postgresql+psycopg://u:p@h:5432/d"
    assert db.sqlalchemy_url("postgres://h/d") == "postgresql+psycopg://h/d"
    with pytest.raises(ValueError):
        db.sqlalchemy_url("redis://h/0")


def test_database_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MAILMOAT_DATABASE_URL", raising=False)
    assert db.database_url() == "postgresql://postgres@127.0.0.1:5432/mailmoat"
    monkeypatch.setenv("MAILMOAT_DATABASE_URL", "postgresql://db.internal/records")
    assert db.database_url() == "postgresql://db.internal/records"


def test_event_data_json_any_value() -> None:
    when = datetime(2026, 3, 1, 12, tzinfo=UTC)
    row = event_row(_event(data={"at": when, "n": 1}))
    assert row[6] == '{"at":"2026-03-01T12:00:00Z","n":1}'  # as pydantic writes a datetime
    assert event_row(_event(data={"k": "a\x00b"}))[6] == '{"k":"a\ufffdb"}'
    assert event_row(_event(data={"k": "\udcff"}))[6] == '{"k":"\\\\xff"}'
