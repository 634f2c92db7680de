"""Byte-level edits of a message (pure): every byte outside the edited field or part stays as it was.

The message is never re-serialised by a generator. ``parts`` finds each MIME part's byte span from the
boundaries (numbered as the antivirus stage numbers them: ``1`` the message, ``1.2`` the second part
of a multipart, ``1.2.1`` the message inside a ``message/rfc822`` part); ``replace_parts`` swaps parts
for a short text notice; ``prepend_subject`` edits the Subject field in place (RFC 2047-safe).
Lines end in CRLF (ingress refuses anything else).
"""

from __future__ import annotations

import base64
import email.message
import re
from dataclasses import dataclass, field

from mailmoat_mail import mimeparts

CRLF = b"\r\n"
MAX_LINE = 998
MAX_PARTS = mimeparts.MAX_PARTS
"""The most entities ``parts`` takes apart: as many as any stage's parser reads, so an edit reaches every part
a filter saw (ingress refuses messages with more, ``limits.max_mime_parts``)."""


@dataclass
class Span:
    """One MIME entity: its bytes are ``raw[start:end]``, its body ``raw[body_start:end]``."""

    path: str
    start: int
    body_start: int
    end: int
    content_type: str
    filename: str | None = None
    attachment: bool = False
    children: list[Span] = field(default_factory=list)

    @property
    def leaf(self) -> bool:
        return not self.children


# --- header sections ----------------------------------------------------------------------------


_HEADER_LINE = re.compile(rb"From |[\x21-\x39\x3b-\x7e]*:|[ \t]")
"""A line the library's parser takes into a header section (``email.feedparser.headerRE``)."""


def sections(raw: bytes, start: int = 0, end: int | None = None) -> tuple[int, int]:
    """(end of the header fields, start of the body) of the entity at ``raw[start:end]``: the blank
    line lies between them; both are ``end`` when the fields run to the end. As the library's parser
    reads it, the first line that is no header line (``--boundary``, ``Subject : x``) ends the fields
    too and is the body's first line (both are its start)."""
    end = len(raw) if end is None else end
    pos = start
    while pos < end:
        if raw.startswith(CRLF, pos, end):
            return pos, pos + 2
        if not _HEADER_LINE.match(raw, pos, end):
            return pos, pos
        nl = raw.find(CRLF, pos, end)
        if nl == -1:
            break
        pos = nl + 2
    return end, end


def body_offset(raw: bytes, start: int = 0, end: int | None = None) -> int:
    """Where the body of the entity at ``raw[start:end]`` begins (after the blank line); ``end`` when none."""
    return sections(raw, start, end)[1]


def header_fields(raw: bytes, start: int, stop: int) -> list[tuple[bytes, int, int]]:
    """``(lower-cased name, start, end)`` of each header field in ``raw[start:stop]``, folded lines included;
    ``end`` is just after the field's final CRLF. Folded lines that open the section are no field of
    any name (``b""``), as readers skip them."""
    fields: list[tuple[bytes, int, int]] = []
    pos = start
    while pos < stop:
        nl = raw.find(CRLF, pos, stop)
        line_end = stop if nl == -1 else nl + 2
        line = raw[pos:line_end]
        if line in (CRLF, b""):
            break
        folded = line[:1] in (b" ", b"\t")
        if folded and fields:
            name, first, _ = fields[-1]
            fields[-1] = (name, first, line_end)
        else:
            name = line.split(b":", 1)[0].strip().lower() if b":" in line and not folded else b""
            fields.append((name, pos, line_end))
        pos = line_end
    return fields


def _parse_head(head: bytes) -> email.message.Message:
    return mimeparts.parse(head + CRLF)


# --- the MIME tree ------------------------------------------------------------------------------


def parts(raw: bytes, max_parts: int = MAX_PARTS, max_depth: int = mimeparts.MAX_DEPTH) -> Span:
    """The MIME tree of a message, with byte spans (never raises for what the message holds; parts
    nested deeper than ``max_depth`` are left inside their container, parts after the first ``max_parts``
    entities are left out)."""
    count = [0]
    return _entity(raw, "1", 0, len(raw), count, max_parts, max_depth)


def _entity(raw: bytes, path: str, start: int, end: int, count: list[int], max_parts: int, depth: int) -> Span:
    body = body_offset(raw, start, end)
    head = _parse_head(raw[start:body])
    ctype = mimeparts.content_type(head)
    filename = mimeparts.filename(head)
    span = Span(path, start, body, end, ctype, filename, bool(filename) or mimeparts.disposition(head) == "attachment")
    count[0] += 1
    if count[0] >= max_parts or depth <= 0:
        return span
    cte = mimeparts.transfer_encoding(head) or "7bit"
    if ctype.startswith("multipart/"):
        boundary = mimeparts.boundary_bytes(head)
        if boundary:
            for index, (first, last) in enumerate(_children(raw, body, end, boundary), 1):
                if count[0] >= max_parts:  # the parts past the limit are not taken apart
                    break
                span.children.append(_entity(raw, f"{path}.{index}", first, last, count, max_parts, depth - 1))
    elif ctype == "message/rfc822" and cte in ("7bit", "8bit", "binary") and body < end:
        span.children.append(_entity(raw, f"{path}.1", body, end, count, max_parts, depth - 1))
    return span


def _children(raw: bytes, start: int, end: int, boundary: bytes) -> list[tuple[int, int]]:
    """Byte ranges of the parts of a multipart body (the CRLF before a delimiter belongs to it).

    As the library's parser reads them, so that a part's path names the same part for the filters
    and here: delimiter lines that follow one another without a line between them are one separator
    (no empty part between them), a close delimiter among them included."""
    pattern = re.compile(rb"(?:\A|(?<=\r\n))--" + re.escape(boundary) + rb"(--)?[ \t]*(?:\r\n|\Z)")
    ranges: list[tuple[int, int]] = []
    opened: int | None = None
    segment = raw[start:end]
    for match in pattern.finditer(segment):
        if opened is not None:
            if start + match.start() == opened:  # right after the delimiter line before it
                opened = start + match.end()
                continue
            ranges.append((opened, start + match.start() - 2))
        if match.group(1):
            return ranges
        opened = start + match.end()
    if opened is not None and opened <= end:
        ranges.append((opened, end))  # no close delimiter: the last part runs to the end
    return ranges


def flatten(span: Span) -> list[Span]:
    out = [span]
    for child in span.children:
        out += flatten(child)
    return out


def find(span: Span, path: str) -> Span | None:
    """The entity at ``path`` under ``span`` (followed child by child: the n-th child is ``children[n - 1]``)."""
    if path == span.path:
        return span
    if not path.startswith(span.path + "."):
        return None
    for piece in path[len(span.path) + 1 :].split("."):
        if not (piece.isdigit() and piece.isascii() and len(piece) <= 6) or not 0 < int(piece) <= len(span.children):
            return None
        span = span.children[int(piece) - 1]
    return span if span.path == path else None  # "1.01" names no part


def attachments(raw: bytes) -> list[Span]:
    """Leaf parts that are attachments (named, or ``Content-Disposition: attachment``)."""
    return [s for s in flatten(parts(raw)) if s.leaf and s.attachment and s.path != "1"]


# --- replacing parts ----------------------------------------------------------------------------


def _ascii(text: str, limit: int = 200) -> str:
    return "".join(c if 32 <= ord(c) < 127 else "?" for c in text)[:limit]


def notice_part(filename: str | None, reason: str) -> tuple[bytes, bytes]:
    """(content header lines, body) of the text/plain notice that takes a removed part's place."""
    name = f'"{_ascii(filename)}"' if filename else "an attachment"
    head = (
        b"Content-Type: text/plain; charset=us-ascii\r\n"
        b"Content-Transfer-Encoding: 7bit\r\n"
        b"Content-Disposition: inline\r\n"
        b"Content-Description: removed attachment\r\n"
    )
    text = f"This message contained {name}, which was removed: {_ascii(reason, 400)}.\r\n"
    return head, text.encode("ascii")


def _encoded_message_holding(tree: Span, path: str) -> Span | None:
    """The transfer-encoded ``message/rfc822`` leaf a path points into (walked decoded, kept encoded here)."""
    while "." in path:
        path = path.rpartition(".")[0]
        span = find(tree, path)
        if span is not None:
            return span if span.leaf and span.content_type == "message/rfc822" else None
    return None


def replace_parts(raw: bytes, paths: list[str], reason: str) -> tuple[bytes, list[str]]:
    """Replace the leaf parts at ``paths`` with a text notice; (new bytes, paths replaced).

    In a replaced entity only its ``Content-*`` header fields and its body change; any other field
    (the message's own From, To, ... when the whole message is one part) is kept, byte for byte.
    A path inside a uuencoded block (``1.1.uu1``) replaces the text part holding it, and a path inside
    a transfer-encoded attached message the attached message. Paths of containers are ignored.
    """
    tree = parts(raw)
    targets: dict[int, Span] = {}
    for path in paths:
        path = re.sub(r"\.uu\d+$", "", path)
        span = find(tree, path) or _encoded_message_holding(tree, path)
        if span is not None and span.leaf:
            targets[span.start] = span
    out = bytearray()
    pos = 0
    done: list[str] = []
    for span in sorted(targets.values(), key=lambda s: s.start):
        if span.start < pos:
            continue
        head, body = notice_part(span.filename, reason)
        out += raw[pos : span.start]
        header_end = sections(raw, span.start, span.end)[0]
        kept = [(s, e) for name, s, e in header_fields(raw, span.start, header_end)
                if not name.startswith(b"content-")]
        for s, e in kept:
            out += raw[s:e]
        out += head + CRLF + body
        pos = span.end
        done.append(span.path)
    out += raw[pos:]
    return bytes(out), done


# --- Subject ------------------------------------------------------------------------------------


def _encoded_prefix(prefix: str, before_encoded_word: bool) -> bytes:
    """The prefix as header bytes: itself when ASCII, else an RFC 2047 encoded-word."""
    if prefix.isascii():
        return prefix.encode("ascii")
    # Whitespace between two encoded-words is dropped when decoding: keep the prefix's trailing
    # space inside the word when the Subject itself starts with one.
    inner = prefix if before_encoded_word else prefix.rstrip()
    word = b"=?utf-8?b?" + base64.b64encode(inner.encode("utf-8")) + b"?="
    return word + (b" " if prefix != prefix.rstrip() else b"")


def prepend_subject(raw: bytes, prefix: str) -> bytes:
    """``raw`` with ``prefix`` before the Subject (added when missing; left alone when already there)."""
    if not prefix.strip():
        return raw
    header_end, body = sections(raw)
    subject = next(((s, e) for name, s, e in header_fields(raw, 0, header_end) if name == b"subject"), None)
    if subject is None:
        line = b"Subject: " + _encoded_prefix(prefix, False).rstrip() + CRLF
        if header_end == body and not raw.endswith(CRLF) and raw:
            return raw + CRLF + line
        return raw[:header_end] + line + raw[header_end:]
    start, end = subject
    colon = raw.index(b":", start, end) + 1
    value = raw[colon:end]
    stripped = value.lstrip(b" \t")
    text = stripped.rstrip(b"\r\n")
    if text.startswith(_encoded_prefix(prefix, text.startswith(b"=?")).rstrip()):
        return raw
    if not text.strip():
        new = b" " + _encoded_prefix(prefix, False).rstrip() + CRLF
    else:
        encoded = _encoded_prefix(prefix, text.startswith(b"=?"))
        new = b" " + encoded + stripped
        first_line = raw[start:colon] + new.split(CRLF, 1)[0]
        if len(first_line) > MAX_LINE and encoded.endswith(b" "):
            new = b" " + encoded.rstrip() + CRLF + b" " + stripped
    return raw[:colon] + new + raw[end:]


__all__ = ["Span", "attachments", "body_offset", "find", "flatten", "header_fields", "notice_part", "parts",
           "prepend_subject", "replace_parts", "sections"]
