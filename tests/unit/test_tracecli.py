"""`mailmoat trace`'s pure parts: time arguments, the note about the recorder; quarantine show's verdicts."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta

import pytest

from mailmoat_cli.main import verdict_lines
from mailmoat_cli.tracecli import Backlog, behind_note, moment


def test_moment_reads_dates_date_times_and_times_ago() -> None:
    now = datetime(2026, 5, 1, 12, tzinfo=UTC)
    assert moment("2026-01-31") == datetime(2026, 1, 31, tzinfo=UTC)
    assert moment("2026-01-31T12:30+02:00") == datetime(2026, 1, 31, 10, 30, tzinfo=UTC)
    assert moment("2h", now) == now - timedelta(hours=2)
    assert moment("7d", now) == now - timedelta(days=7)
    assert moment("30m", now) == now - timedelta(minutes=30)
    with pytest.raises(argparse.ArgumentTypeError):
        moment("yesterday")


def test_behind_note() -> None:
    assert behind_note(None) is None
    assert behind_note(Backlog(0, 1)) is None
    assert behind_note(Backlog(3, 1)).startswith("the recorder is behind by 3 trace batch(es)")  # type: ignore[union-attr]
    assert behind_note(Backlog(3, 0)).startswith("no recorder is running: behind by 3")  # type: ignore[union-attr]
    assert "cannot tell" in behind_note(None, "RabbitMQ: refused")  # type: ignore[operator]


def test_quarantine_show_prints_typed_verdict_fields_one_a_line() -> None:
    lines = verdict_lines("antivirus", {"stage": "antivirus", "result": "malware",
                                        "detail": {"names": ["Eicar-Signature", "Other"], "parts": "two"},
                                        "at": "2026-01-01T00:00:00Z"})
    assert lines[0] == "  antivirus: malware"
    assert lines[1].split() == ["names:", "Eicar-Signature,", "Other"]
    assert len(lines) == 2  # a value its model cannot read (parts is a number) is left out
    unknown = verdict_lines("no_such_stage", {"result": "x", "detail": {"k": {"a": 1}}})
    assert unknown == ["  no_such_stage: x", '    k: {"a": 1}']
    assert verdict_lines("antispam", {"result": "clean"}) == ["  antispam: clean"]
