"""A file's change stamp: what a watcher compares to notice a new version of a file without reading it."""

from __future__ import annotations

import os

Stamp = tuple[float, int, int]


def file_stamp(path: str | os.PathLike[str]) -> Stamp | None:
    """Modification time, size and inode of ``path`` (a file replaced by a rename has a new inode); None
    when it cannot be read."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime, st.st_size, st.st_ino)


class FileChanges:
    """Whether a file changed since the last look (its stamp when made is the first one)."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = path
        self._stamp = file_stamp(path)

    def changed(self) -> bool:
        """True once per change of the file's stamp."""
        stamp = file_stamp(self.path)
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        return True
