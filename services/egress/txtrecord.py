"""The versioned TXT records MTA-STS (RFC 8461 3.1) and TLS reporting (RFC 8460 3) publish alike:
``v=<version>`` first, then ``key=value`` fields separated by ``;``."""

from __future__ import annotations

import re


def the_record(records: list[str], version: str, error: type[ValueError]) -> str | None:
    """The one record starting ``v=<version>``; None when there is none; raises ``error`` when there are
    several."""
    start = re.compile(rf"^v={re.escape(version)}\s*(;|$)")
    found = [r for r in records if start.match(r)]
    if not found:
        return None
    if len(found) > 1:
        raise error(f"more than one v={version} TXT record")
    return found[0]


def fields(record: str) -> list[tuple[str, str]]:
    """``(key, value)`` of each field after the version (the field stripped of white space, split at its
    first ``=``)."""
    return [(key, value) for key, _, value in (f.strip().partition("=") for f in record.split(";")[1:])]
