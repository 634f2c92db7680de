"""Maildir delivery: one Maildir per recipient, the received bytes kept exactly.

Like an MTA's local delivery, ``Return-Path:`` and ``Delivered-To:`` are prepended and nothing else
is touched. The file is written under ``tmp/`` and renamed into ``new/`` (the Maildir protocol).
"""

from __future__ import annotations

import itertools
import os
import socket
import time
from pathlib import Path

_sequence = itertools.count(1)


def folder_name(address: str) -> str:
    """The folder of a recipient: the address lower-cased, made safe as one path component."""
    name = address.strip().strip("<>").lower()
    name = "".join("_" if ch in "/\\\0" or ord(ch) < 32 else ch for ch in name).lstrip(".")
    return name or "postmaster"


def delivery_headers(recipient: str, sender: str) -> bytes:
    """The header lines prepended at delivery (``sender`` empty for the null sender ``<>``)."""
    return f"Return-Path: <{sender}>\r\nDelivered-To: {recipient}\r\n".encode("utf-8", "surrogateescape")


def unique_name() -> str:
    """A Maildir file name: time, process, sequence and host, unique on this machine."""
    host = socket.gethostname().replace("/", "\\057").replace(":", "\\072")
    return f"{time.time_ns() // 1000}.P{os.getpid()}Q{next(_sequence)}.{host}"


def deliver(root: Path, recipient: str, sender: str, data: bytes) -> Path:
    """Write one message into ``root/<recipient>/new/`` and return its path."""
    box = root / folder_name(recipient)
    for sub in ("tmp", "new", "cur"):
        (box / sub).mkdir(parents=True, exist_ok=True)
    name = unique_name()
    tmp = box / "tmp" / name
    try:
        with open(tmp, "xb") as handle:
            handle.write(delivery_headers(recipient, sender))
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        final = box / "new" / name
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return final
