"""DSNs are built in ``mailmoat_mail.dsn`` (routing's non-delivery reports share the code)."""

from mailmoat_mail.dsn import (
    DIAGNOSTIC_LIMIT,
    SPAM_RESULTS,
    SUBJECT,
    Failure,
    build_dsn,
    original_headers,
    wants_dsn,
)

__all__ = ["DIAGNOSTIC_LIMIT", "SPAM_RESULTS", "SUBJECT", "Failure", "build_dsn", "original_headers", "wants_dsn"]
