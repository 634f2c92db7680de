"""Reading parsed MIME parts safely (pure): decoded payload bytes and attachment file names.

Malformed mail is normal input for a mail gateway: these never raise for what a message contains.
"""

from __future__ import annotations

import binascii
from email.message import Message


def payload(part: Message) -> bytes:
    """The part's body decoded from its transfer encoding; the raw body when it cannot be decoded."""
    try:
        data = part.get_payload(decode=True)
    except (TypeError, ValueError, LookupError, binascii.Error):
        data = None
    if isinstance(data, bytes):
        return data
    raw = part.get_payload()
    return raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else b""


def filename(part: Message) -> str | None:
    """The part's file name (Content-Disposition or Content-Type ``name``), stripped; None when absent."""
    try:
        name = part.get_filename()
    except (TypeError, ValueError, LookupError):
        return None
    if name is None:
        return None
    return str(name).strip() or None


__all__ = ["filename", "payload"]
