"""The versioned TXT records MTA-STS (RFC 8461 3.1) and TLS reporting (RFC 8460 3) publish alike:
``v=<version>`` first, then ``key=value`` fields, each after a delimiter ``*WSP ";" *WSP``. A record with a
field that does not follow this syntax is refused as a whole: both RFCs have the sender take the domain as
one that publishes nothing then. Two slips whose meaning is plain are read past, as the widely used
resolvers read them, rather than dropping the domain's policy for them (an MTA-STS ``enforce`` policy
would fall back to opportunistic TLS): white space after the last field, and empty fields (``;;``)."""

from __future__ import annotations

import re
from collections.abc import Collection

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")
"""A field name (``sts-ext-name``, ``tlsrpt-ext-name``)."""
_VALUE = re.compile(r"[\x21-\x3a\x3c\x3e-\x7e]+")
"""A field value (``sts-ext-value``, ``tlsrpt-ext-value``): printable ASCII but ``=``, ``;`` and space."""
_WSP = " \t"


def the_record(records: list[str], version: str, error: type[ValueError]) -> str | None:
    """The one record starting ``v=<version>;`` (records that do not are discarded: a bare ``v=<version>``
    too); None when there is none; raises ``error`` when there are several."""
    start = re.compile(rf"v={re.escape(version)}[ \t]*;")
    found = [r for r in records if start.match(r)]
    if not found:
        return None
    if len(found) > 1:
        raise error(f"more than one v={version} TXT record")
    return found[0]


def fields(record: str, error: type[ValueError], free: Collection[str] = ()) -> list[tuple[str, str]]:
    """``(key, value)`` of each field after the version, in order (empty fields and the white space around a
    field skipped). Raises ``error`` for a field that has no ``=``, a name that is not 1 to 32 letters, digits,
    ``_``, ``-`` or ``.`` (starting with a letter or digit), or a value that is empty or holds other than
    printable ASCII but ``=``, ``;`` and space. The values of the keys in ``free`` are the caller's to check
    (TLS-RPT's ``rua`` has white space around its commas)."""
    found: list[tuple[str, str]] = []
    for part in record.split(";")[1:]:
        text = part.strip(_WSP)
        if not text:
            continue
        key, sep, value = text.partition("=")
        if not sep or not _NAME.fullmatch(key):
            raise error(f"field {text[:40]!r} is not name=value")
        if key not in free and not _VALUE.fullmatch(value):
            raise error(f"field {key} has the value {value[:40]!r}, not printable ASCII without '=', ';' and space")
        found.append((key, value))
    return found
