"""DSNs are built in ``mailmoat_common.dsn`` (routing's non-delivery reports share the code)."""

from mailmoat_common.dsn import (
    DIAGNOSTIC_LIMIT,
    SPAM_RESULTS,
    SUBJECT,
    Failure,
    build_dsn,
    original_headers,
    wants_dsn,
)

__all__ = ["DIAGNOSTIC_LIMIT", "SPAM_RESULTS", "SUBJECT", "Failure", "build_dsn", "original_headers", "wants_dsn"]
