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
import email
import email.policy
import re
from dataclasses import dataclass
from email.message import Message

from mailmoat_common import mimeparts

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
    """(filename, bytes) of every ``begin <mode> <name>`` ... ``end`` block in a text body."""
    out: list[tuple[str, bytes]] = []
    for match in _UU_BEGIN.finditer(text):
        name = match.group(1).decode("latin-1").strip()
        data = bytearray()
        for line in text[match.end() :].splitlines()[1:]:
            line = line.rstrip(b"\r")
            if line in (b"end", b"`", b""):
                if line == b"end":
                    break
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
        if len(out) >= MAX_PARTS:
            break
    return out


def walk(raw: bytes, max_parts: int = MAX_PARTS) -> list[Part]:
    """The decoded leaves of a message, message/rfc822 attachments included (at most ``max_parts``)."""
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    parts: list[Part] = []
    _walk(message, "1", parts, max_parts)
    return parts


def _walk(node: Message, path: str, out: list[Part], max_parts: int, anchor: str | None = None) -> None:
    if len(out) >= max_parts:
        return
    if node.is_multipart():
        children = node.get_payload()
        if isinstance(children, list):
            for index, child in enumerate(children, 1):
                if isinstance(child, Message):
                    _walk(child, f"{path}.{index}", out, max_parts, anchor)
        return
    content_type = node.get_content_type()
    payload = mimeparts.payload(node)
    filename = mimeparts.filename(node)
    disposition = (node.get("Content-Disposition") or "").split(";", 1)[0].strip().lower()
    attachment = filename is not None or disposition == "attachment"
    if content_type == "message/rfc822" and payload:
        # A message attached with a transfer encoding (not allowed, but seen): parse the decoded bytes.
        inner = email.message_from_bytes(payload, policy=email.policy.compat32)
        _walk(inner, path + ".1", out, max_parts, anchor or path)
        return
    out.append(Part(path, content_type, filename, payload, attachment, anchor or path))
    if content_type.startswith("text/") and b"begin " in payload:
        for index, (name, data) in enumerate(uudecode_blocks(payload), 1):
            if len(out) >= max_parts:
                return
            out.append(Part(f"{path}.uu{index}", "application/octet-stream", name, data, True, anchor or path))
