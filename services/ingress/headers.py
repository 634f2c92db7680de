"""Raw header-block operations on message bytes: nothing is re-serialised, every other byte is kept."""

from __future__ import annotations

GATEWAY_PREFIX = b"x-mailmoat-"


def header_block(data: bytes) -> bytes:
    """The header block including its final CRLF, without the empty separator line.

    A message without an empty line is all header; one starting with CRLF has an empty header.
    """
    if data.startswith(b"\r\n"):
        return b""
    end = data.find(b"\r\n\r\n")
    return data if end < 0 else data[: end + 2]


def count_headers(block: bytes, name: bytes) -> int:
    """How many header fields named ``name`` (lower case, without colon) the block holds."""
    lower = block.lower()
    needle = name + b":"
    return int(lower.startswith(needle)) + lower.count(b"\r\n" + needle)


def strip_gateway_headers(data: bytes) -> bytes:
    """Remove header fields named ``X-Mailmoat-*`` (with their continuation lines) from the header block."""
    block = header_block(data)
    if GATEWAY_PREFIX not in block.lower():
        return data
    kept: list[bytes] = []
    dropping = False
    pos = 0
    while pos < len(block):
        newline = block.find(b"\r\n", pos)
        end = len(block) if newline < 0 else newline + 2
        line = block[pos:end]
        pos = end
        if line[:1] in (b" ", b"\t"):
            if not dropping:
                kept.append(line)
            continue
        dropping = line[: len(GATEWAY_PREFIX)].lower() == GATEWAY_PREFIX
        if not dropping:
            kept.append(line)
    return b"".join(kept) + data[len(block) :]


def header_value(block: bytes, name: bytes) -> bytes | None:
    """The raw value of the first field named ``name`` (lower case), unfolded and stripped."""
    lower = block.lower()
    needle = name + b":"
    if lower.startswith(needle):
        start = 0
    else:
        start = lower.find(b"\r\n" + needle)
        if start < 0:
            return None
        start += 2
    end = start
    while True:
        end = block.find(b"\r\n", end)
        if end < 0:
            end = len(block)
            break
        if block[end + 2 : end + 3] not in (b" ", b"\t"):
            break
        end += 2
    value = block[start + len(needle) : end]
    return value.replace(b"\r\n", b"").strip()


def message_id(data: bytes) -> str | None:
    """The Message-ID header value (as text) for the trace index, or None."""
    value = header_value(header_block(data), b"message-id")
    if not value:
        return None
    return value.decode("utf-8", "replace")
