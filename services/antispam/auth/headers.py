"""Raw header access for authentication: fields as byte ranges of the message (never re-serialised),
the From domain, and removal of ``Authentication-Results`` fields that claim our authserv-id."""

from __future__ import annotations

import re
from dataclasses import dataclass

from mailmoat_mail.author import read_author


@dataclass(frozen=True)
class Field:
    name: str
    """Field name as written (compare with ``.lower()``)."""
    start: int
    end: int
    """Byte range of the whole field in the message, folded lines and line end included."""
    raw: bytes

    @property
    def value(self) -> str:
        """The unfolded value after the colon (decoded as UTF-8, bad octets replaced)."""
        body = self.raw.split(b":", 1)[1] if b":" in self.raw else b""
        text = body.decode("utf-8", "replace")
        return re.sub(r"\r?\n(?=[ \t])", "", text).strip()


def header_end(data: bytes) -> int:
    """Offset just past the header block (past its empty line), or len(data) when there is no body."""
    if data[:2] == b"\r\n" or data[:1] == b"\n":
        return 2 if data[:1] == b"\r" else 1
    # The first empty line ("\r\n" or "\n" alone) starts just after a line feed.
    crlf = data.find(b"\n\r\n")
    lf = data.find(b"\n\n", 0, crlf + 1 if crlf >= 0 else len(data))  # only one before it counts
    if crlf < 0 and lf < 0:
        return len(data)
    if lf < 0 or 0 <= crlf < lf:
        return crlf + 3
    return lf + 2


def may_hold(data: bytes, *names: bytes) -> bool:
    """Whether one of ``names`` (lower-case ASCII) occurs in the header block, case aside. When none does, no
    field's name is or begins with one of them, and ``fields`` need not be read to know it."""
    block = data[:header_end(data)].lower()
    return any(name in block for name in names)


def fields(data: bytes) -> list[Field]:
    """The header fields in order, each with its continuation lines."""
    out: list[Field] = []
    end = header_end(data)
    position = 0
    current: int | None = None
    while position < end:
        newline = data.find(b"\n", position, end)
        line_end = end if newline < 0 else newline + 1
        line = data[position:line_end]
        if line in (b"\r\n", b"\n"):
            break
        if line[:1] in (b" ", b"\t") and current is not None:
            position = line_end
            continue
        if current is not None:
            out.append(_field(data, current, position))
        current = position
        position = line_end
    if current is not None:
        out.append(_field(data, current, position))
    return out


def _field(data: bytes, start: int, end: int) -> Field:
    raw = data[start:end]
    name = raw.split(b":", 1)[0].decode("ascii", "replace").strip() if b":" in raw else ""
    return Field(name, start, end, raw)


def from_domains(data: bytes) -> list[str]:
    """Every author domain (RFC 5322 From, read by ``mailmoat_mail.author``), lower case, in order."""
    return read_author(data).domains


_AUTHSERV = re.compile(rb'^\s*(?:\((?:[^()\\]|\\.)*\)\s*)*("(?:[^"\\]|\\.)*"|[^\s;()]+)', re.S)


def authserv_id_of(field: Field) -> str | None:
    """The authserv-id an ``Authentication-Results`` field names (comments skipped, quotes removed)."""
    body = field.raw.split(b":", 1)[1] if b":" in field.raw else b""
    match = _AUTHSERV.match(re.sub(rb"\r?\n(?=[ \t])", b"", body))
    if not match:
        return None
    value = match.group(1).decode("utf-8", "replace")
    if value.startswith('"'):
        value = re.sub(r"\\(.)", r"\1", value[1:-1])
    return value.lower().rstrip(".")


def strip_spoofed_authres(data: bytes, authserv_id: str) -> bytes:
    """``data`` without the ``Authentication-Results`` fields claiming ``authserv_id`` (RFC 8601 5);
    every other octet is kept as it was."""
    if not may_hold(data, b"authentication-results"):
        return data
    wanted = authserv_id.lower().rstrip(".")
    drop = [f for f in fields(data) if f.name.lower() == "authentication-results" and authserv_id_of(f) == wanted]
    if not drop:
        return data
    parts: list[bytes] = []
    position = 0
    for field in drop:
        parts.append(data[position:field.start])
        position = field.end
    parts.append(data[position:])
    return b"".join(parts)


__all__ = ["Field", "authserv_id_of", "fields", "from_domains", "header_end", "may_hold", "strip_spoofed_authres"]
