"""The gateway's own ``Received:`` trace header (RFC 5321 4.4), prepended to the raw bytes."""

from __future__ import annotations

from datetime import datetime
from email.utils import format_datetime

from mailmoat_platform.models import TlsInfo


def clean(text: str | None, fallback: str = "unknown") -> str:
    """Printable ASCII only, no parentheses or brackets, so a client cannot forge header syntax."""
    if not text:
        return fallback
    out = "".join(ch if "!" <= ch <= "~" and ch not in "()<>;\\" else "?" for ch in text[:255])
    return out or fallback


def protocol(esmtp: bool, tls: bool, smtputf8: bool) -> str:
    """The ``with`` keyword of RFC 3848 / RFC 6531."""
    if smtputf8:
        return "UTF8SMTPS" if tls else "UTF8SMTP"
    name = "ESMTP" if esmtp else "SMTP"
    return name + "S" if tls else name


def build_received(
    *,
    helo: str | None,
    client_hostname: str | None,
    client_ip: str,
    by_host: str,
    queue_id: str,
    recipients: list[str],
    at: datetime,
    esmtp: bool = True,
    tls: TlsInfo | None = None,
    smtputf8: bool = False,
) -> bytes:
    """The header as CRLF-terminated bytes.

    ``for`` names the recipient only when there is exactly one, so Bcc recipients stay private.
    """
    lines = [f"Received: from {clean(helo)} ({clean(client_hostname)} [{clean(client_ip)}])"]
    if tls is not None:
        lines.append(f"\t(using {clean(tls.version)} with cipher {clean(tls.cipher)})")
    by = f"\tby {clean(by_host)} (mailmoat) with {protocol(esmtp, tls is not None, smtputf8)} id {queue_id}"
    if len(recipients) == 1:
        lines.append(by)
        lines.append(f"\tfor <{_addr(recipients[0])}>; {format_datetime(at)}")
    else:
        lines.append(f"{by}; {format_datetime(at)}")
    text = "\r\n".join(lines) + "\r\n"
    return text.encode("utf-8", "replace") if smtputf8 else text.encode("ascii", "replace")


def _addr(address: str) -> str:
    return "".join(ch for ch in address if ch not in "\r\n<>")
