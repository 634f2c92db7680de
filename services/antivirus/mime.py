"""Every MIME part of a message, transfer-decoded (pure, read-only).

The message is parsed only to read it: the bytes that travel on are never re-serialised. Parts of
attached messages (``message/rfc822``) are walked too, and uuencoded blocks inside text bodies are
decoded as files of their own.

Part paths (the numbering the verdict's ``strip`` list uses): the message itself is ``1``; the n-th
child of a multipart at path ``p`` is ``p.n`` (so a message's first-level parts are ``1.1``,
``1.2``, ...); a ``message/rfc822`` part at ``p`` holds its message at ``p.1``, whose parts are
``p.1.1``, ``p.1.2``, .... A message that is not multipart has the single leaf ``1``. A uuencoded
block in a text leaf ``p`` is ``p.uu<n>``; it is not a MIME part, so it is stripped as its leaf
``p`` (``Part.strip_path``), and likewise a part found inside a ``message/rfc822`` attachment that
came with a transfer encoding (not allowed, but seen) is stripped as that attachment.
"""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass, field
from email.message import Message

from mailmoat_mail import mimeparts

MAX_PARTS = 1_000

_UU_BEGIN = re.compile(rb"^begin(?:-base64)? [0-7]{3,4} ([^\r\n]+)\r?$", re.MULTILINE)


@dataclass
class Part:
    """One leaf of the MIME tree after transfer decoding."""

    path: str
    """Position in the tree (``1.2``), with ``.uu<n>`` for a uuencoded block in a text body."""
    content_type: str
    filename: str | None
    payload: bytes
    attachment: bool
    """Named or ``Content-Disposition: attachment`` (the common attachment filter's scope)."""
    strip_path: str = ""
    """The MIME part to strip to remove this one (``path`` itself for every real MIME leaf)."""

    def __post_init__(self) -> None:
        if not self.strip_path:
            self.strip_path = self.path


def uudecode_blocks(text: bytes) -> list[tuple[str, bytes]]:
    """(filename, bytes) of every ``begin <mode> <name>`` ... ``end`` block in a text body (one pass:
    a block ends at ``end``, at an undecodable line or with the text)."""
    out: list[tuple[str, bytes]] = []
    pos = 0
    while len(out) < MAX_PARTS:
        match = _UU_BEGIN.search(text, pos)
        if match is None:
            break
        name = mimeparts.text(mimeparts.decode(match.group(1), None)).strip()
        data = bytearray()
        pos = _next_line(text, match.end())
        while pos < len(text):
            end = _next_line(text, pos)
            line = text[pos:end].rstrip(b"\r\n")
            pos = end
            if line == b"end":
                break
            if line in (b"`", b""):
                continue
            try:
                data += binascii.a2b_uu(line)
            except binascii.Error:
                # Some encoders pad lines short; decode what the length byte announces.
                try:
                    length = (line[0] - 32) & 63
                    data += binascii.a2b_uu(line[: (length + 2) // 3 * 4 + 1])
                except (binascii.Error, IndexError):
                    break
        out.append((name, bytes(data)))
    return out


def _next_line(text: bytes, pos: int) -> int:
    """Where the line after the one at ``pos`` starts (``len(text)`` at the end)."""
    index = text.find(b"\n", pos)
    return len(text) if index == -1 else index + 1


@dataclass
class Walked:
    """The leaves of a message, and what the walk had to leave out."""

    parts: list[Part] = field(default_factory=list)
    too_deep: str | None = None
    """The first container nested deeper than ``mimeparts.MAX_DEPTH`` (its parts are not walked)."""
    too_encoded: str | None = None
    """The first attached message sent transfer-encoded inside ``mimeparts.MAX_ENCODED`` others (not walked)."""
    too_many: bool = False
    """More than ``max_parts`` leaves, or more entities than the parser reads: the rest is not walked."""


def walk(raw: bytes, max_parts: int = MAX_PARTS) -> list[Part]:
    """The decoded leaves of a message, message/rfc822 attachments included (at most ``max_parts``)."""
    return walk_message(raw, max_parts).parts


def walk_message(raw: bytes, max_parts: int = MAX_PARTS, max_depth: int = mimeparts.MAX_DEPTH) -> Walked:
    """``walk`` with what it left out; never raises for what the message holds."""
    walked = Walked()
    _walk(mimeparts.parse(raw), "1", walked, max_parts, max_depth, 0)
    return walked


def _walk(node: Message, path: str, out: Walked, max_parts: int, max_depth: int, depth: int,
          anchor: str | None = None, encoded_in: int = 0) -> None:
    if len(out.parts) >= max_parts:
        out.too_many = True
        return
    if depth > max_depth:
        out.too_deep = out.too_deep or path
        return
    if mimeparts.too_deep(node):  # the parser gave up: the body goes on as one leaf
        out.too_deep = out.too_deep or path
    if mimeparts.too_many(node):  # the parser stopped reading: what follows is not in the tree
        out.too_many = True
    encoded = mimeparts.encoded_message(node)
    if encoded is not None:  # an attached message sent transfer-encoded: walked decoded, stripped whole
        if encoded_in >= mimeparts.MAX_ENCODED:
            out.too_encoded = out.too_encoded or path
            return
        _walk(mimeparts.parse(encoded), path + ".1", out, max_parts, max_depth, depth + 1, anchor or path,
              encoded_in + 1)
        return
    if node.is_multipart():
        children = node.get_payload()
        if isinstance(children, list):
            for index, child in enumerate(children, 1):
                if isinstance(child, Message):
                    _walk(child, f"{path}.{index}", out, max_parts, max_depth, depth + 1, anchor, encoded_in)
        return
    content_type = mimeparts.content_type(node)
    payload = mimeparts.payload(node)
    filename = mimeparts.filename(node)
    attachment = filename is not None or mimeparts.disposition(node) == "attachment"
    if content_type == "message/rfc822" and payload:
        # A message attached with a transfer encoding (not allowed, but seen): parse the decoded bytes.
        _walk(mimeparts.parse(payload), path + ".1", out, max_parts, max_depth, depth + 1, anchor or path)
        return
    out.parts.append(Part(path, content_type, filename, payload, attachment, anchor or path))
    if content_type.startswith("text/") and b"begin " in payload:
        for index, (name, data) in enumerate(uudecode_blocks(payload), 1):
            if len(out.parts) >= max_parts:
                out.too_many = True
                return
            out.parts.append(Part(f"{path}.uu{index}", "application/octet-stream", name, data, True,
                                  anchor or path))
