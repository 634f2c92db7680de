"""A daemon the tests start in the foreground, in its own session, and wait on until it answers.

Subclasses give the command line and ``ready()``; ``start``/``stop`` bound every wait::

    class Thing(Daemon):
        name = "thing"
        def command(self) -> list[str]: ...
        def ready(self) -> bool: ...
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path


def find_binary(name: str, *fallbacks: str) -> str | None:
    """The executable ``name`` on PATH or at one of ``fallbacks`` (sbin is not always on PATH)."""
    for candidate in (shutil.which(name), *fallbacks):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


class Daemon:
    name = "daemon"

    def __init__(self, workdir: Path, *, user: str | None = None, ready_timeout: float = 90.0):
        """``user``: who the daemon runs as when started by root. Its files then live in a directory of
        its own under the system's temporary directory (pytest's are reachable by root alone)."""
        logdir = Path(workdir)
        logdir.mkdir(parents=True, exist_ok=True)
        self.log = logdir / f"{self.name}.out"
        self.user = user if os.geteuid() == 0 else None
        self._private = self.user is not None
        if self.user is not None:
            self.workdir = Path(tempfile.mkdtemp(prefix=f"mailmoat-test-{self.name}-"))
            self.workdir.chmod(0o755)
            entry = pwd.getpwnam(self.user)
            os.chown(self.workdir, entry.pw_uid, entry.pw_gid)
        else:
            self.workdir = logdir
        self.ready_timeout = ready_timeout
        self.proc: subprocess.Popen[bytes] | None = None

    def own(self, *paths: Path) -> None:
        """Make new directories the daemon's user's."""
        for path in paths:
            path.mkdir(parents=True, exist_ok=True)
            if self.user is not None:
                entry = pwd.getpwnam(self.user)
                os.chown(path, entry.pw_uid, entry.pw_gid)

    def command(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        raise NotImplementedError

    def start(self):
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError(f"{self.name} is already running")
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True, cwd=self.workdir)
        deadline = time.monotonic() + self.ready_timeout
        while not self.ready():
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self.stop()
                raise RuntimeError(f"{self.name} exited with {code}:\n{self.tail()}")
            if time.monotonic() >= deadline:
                self.stop()
                raise RuntimeError(f"{self.name} not ready after {self.ready_timeout}s:\n{self.tail()}")
            time.sleep(0.1)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL to the whole process group (the daemons fork their workers)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGCONT)  # a paused daemon cannot act on SIGTERM
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)

    def pause(self) -> None:
        """SIGSTOP the whole process group: the port stays open, nothing answers (a stalled engine)."""
        if self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGCONT)

    def tail(self, lines: int = 40) -> str:
        texts = [p.read_text(errors="replace") for p in self.logs() if p.exists()]
        return "\n".join("\n".join(texts).splitlines()[-lines:]) or "(no output)"

    def logs(self) -> list[Path]:
        return [self.log]

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        if self._private:
            shutil.rmtree(self.workdir, ignore_errors=True)
