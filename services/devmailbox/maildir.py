"""Maildir delivery (pure file I/O): one Maildir per recipient, the message bytes kept exactly."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

_counter = 0


def safe_folder(address: str) -> str:
    """A folder name for an address: lower-cased, no path separators."""
    name = address.strip().strip("<>").lower() or "postmaster"
    return name.replace("/", "_").replace("\\", "_").lstrip(".")


def deliver(root: Path, recipient: str, sender: str, data: bytes) -> Path:
    """Write one message into ``root/<recipient>/new`` the Maildir way (tmp, then rename)."""
    global _counter
    _counter += 1
    box = root / safe_folder(recipient)
    for sub in ("tmp", "new", "cur"):
        (box / sub).mkdir(parents=True, exist_ok=True)
    name = f"{time.time_ns()}.P{os.getpid()}Q{_counter}.{socket.gethostname()}"
    head = f"Return-Path: <{sender}>\r\nDelivered-To: {recipient}\r\n".encode()
    tmp = box / "tmp" / name
    with open(tmp, "wb") as handle:
        handle.write(head + data)
        handle.flush()
        os.fsync(handle.fileno())
    final = box / "new" / name
    os.replace(tmp, final)
    return final
