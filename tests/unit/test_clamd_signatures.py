"""The clamd signature date read from VERSION replies, and the age the gauge reports."""

from __future__ import annotations

from datetime import UTC, datetime

from prometheus_client import REGISTRY

from mailmoat_antivirus.signatures import SignatureAge, signature_date


def test_signature_date_of_a_version_reply() -> None:
    assert signature_date(b"ClamAV 1.4.1/27480/Thu Dec  4 09:23:02 2026\0") == datetime(2026, 12, 4, 9, 23, 2,
                                                                                        tzinfo=UTC)
    assert signature_date(b"ClamAV 1.0.7/27100/Mon Nov 10 08:00:00 2025\n") == datetime(2025, 11, 10, 8, tzinfo=UTC)


def test_no_database_no_date() -> None:
    assert signature_date(b"ClamAV 1.4.1\0") is None
    assert signature_date(b"ClamAV 1.4.1/27480/not a date\0") is None


def test_age_grows_with_the_clock_and_follows_the_newest_reply() -> None:
    now = [datetime(2026, 12, 6, 9, 23, 2, tzinfo=UTC).timestamp()]
    age = SignatureAge("test-signatures", clock=lambda: now[0])
    age.seen(b"ClamAV 1.4.1\0")
    assert age.date is None
    age.seen(b"ClamAV 1.4.1/27480/Thu Dec  4 09:23:02 2026\0")
    assert age.age() == 2 * 86400
    now[0] += 3600
    scraped = REGISTRY.get_sample_value("mailmoat_clamd_signature_age_seconds", {"service": "test-signatures"})
    assert scraped == 2 * 86400 + 3600  # read at scrape time
    age.seen(b"ClamAV 1.4.1/27481/Sun Dec  6 09:23:02 2026\0")
    assert age.age() == 3600
