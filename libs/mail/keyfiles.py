"""Small secret files (DKIM keys, SRS secrets) read once and again only when they change.

A file is re-read when its modification time, size or inode changes, so a rotated k8s Secret (an
atomic symlink swap) takes effect at the next message without a restart. Thread-safe: signing runs
in worker threads.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class FileCache:
    """``get(path, parse)``: ``parse(bytes)`` of the file, cached per (path, parse) until the file changes.

    Raises ``OSError`` when the file cannot be read, and whatever ``parse`` raises."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, object], tuple[tuple[int, int, int], object]] = {}
        self._lock = threading.Lock()

    def get(self, path: str, parse: Callable[[bytes], T], key: object = None) -> T:
        st = os.stat(path)
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        slot = (path, key)
        with self._lock:
            cached = self._cache.get(slot)
        if cached is not None and cached[0] == stamp:
            return cached[1]  # type: ignore[return-value]
        with open(path, "rb") as handle:
            value = parse(handle.read())
        with self._lock:
            self._cache[slot] = (stamp, value)
        return value


__all__ = ["FileCache"]
