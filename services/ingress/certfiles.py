"""The STARTTLS certificate, reloaded when its files change (a cert-manager renewal rewrites the
Secret's files in place), so that new sessions get the new certificate without a restart.

Each new session asks for the context; at most once per ``interval`` seconds that costs a ``stat``
of the files. A changed file is loaded into a new context; one that cannot be loaded (a half-written
pair, a key that does not fit the certificate) is logged and the previous context stays until the
files load. Files that do not exist yet (a Secret not issued yet) mean no STARTTLS until they do.
"""

from __future__ import annotations

import logging
import os
import ssl
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

Stamp = tuple[tuple[int, int, int], ...]


class CertificateFiles:
    """A server SSLContext that follows its certificate, key (and client CA) files."""

    def __init__(self, cert: str, key: str, cafile: str | None,
                 load: Callable[[str, str, str | None], ssl.SSLContext], *, interval: float = 1.0,
                 clock: Callable[[], float] = time.monotonic):
        self.paths = tuple(p for p in (cert, key, cafile) if p)
        self.cert, self.key, self.cafile = cert, key, cafile
        self.load = load
        self.interval = interval
        self.clock = clock
        self.current: ssl.SSLContext | None = None
        self.loads = 0
        self._stamp: Stamp | None = None
        self._checked = float("-inf")
        self.check()

    def _stat(self) -> Stamp | None:
        try:
            # stat follows symlinks: a Secret volume swaps its ..data link, so the inode changes.
            return tuple((s.st_ino, s.st_mtime_ns, s.st_size) for s in (os.stat(p) for p in self.paths))
        except OSError:
            return None

    def check(self) -> None:
        """Load the files when they changed since the last successful load."""
        self._checked = self.clock()
        stamp = self._stat()
        if stamp is None:
            if self.current is None and self._stamp is None:
                log.warning("TLS certificate %s or key %s not readable yet: no STARTTLS until they are",
                            self.cert, self.key)
                self._stamp = ()
            return
        if stamp == self._stamp:
            return
        try:
            context = self.load(self.cert, self.key, self.cafile)
        except (OSError, ssl.SSLError, ValueError) as exc:
            log.warning("TLS certificate %s not loaded (keeping the previous one): %s", self.cert, exc)
            return
        first = self.current is None
        self.current, self._stamp = context, stamp
        self.loads += 1
        log.info("TLS certificate %s %s", self.cert, "loaded" if first else "reloaded")

    def context(self) -> ssl.SSLContext | None:
        """The context for a new session (the files checked at most once per ``interval``)."""
        if self.clock() - self._checked >= self.interval:
            self.check()
        return self.current
