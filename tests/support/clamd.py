"""A real ``clamd`` for tests: its own config, its own generated signatures, a loopback TCP port.

No signature download: the database holds only the EICAR test file's hash and the hash of ClamAV's
own harmless test executable (the one inside every file of Debian's ``clamav-testfiles``)::

    with ClamdServer(workdir) as clamd:     # waits for PING → PONG
        clamd.port                          # 127.0.0.1:<port>
        clamd.stop(); clamd.start()         # to test an engine outage
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from tests.support.daemon import find_binary
from tests.support.infra import free_port

EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
SIGNATURES = (
    "44d88612fea8a8f36de82e1278abb02f:68:Eicar-Test-Signature\n"
    "aa15bcf478d165efd2065190eb473bcb:544:ClamAV-Test-File\n"
)
TESTFILES = Path("/usr/share/clamav-testfiles")


def clamd_binary() -> str | None:
    return find_binary("clamd", "/usr/sbin/clamd")


def ping(port: int, host: str = "127.0.0.1", timeout: float = 1.0) -> bool:
    """Whether clamd answers ``zPING`` with ``PONG``."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"zPING\0")
            reply = b""
            while not reply.endswith(b"\0") and len(reply) < 64:
                chunk = sock.recv(64)
                if not chunk:
                    break
                reply += chunk
            return reply.rstrip(b"\0") == b"PONG"
    except OSError:
        return False


class ClamdServer:
    """One clamd process in the foreground, configured and fed by the test suite."""

    def __init__(self, workdir: Path, port: int | None = None, *, stream_max: str = "30M",
                 ready_timeout: float = 60.0):
        binary = clamd_binary()
        if binary is None:
            raise RuntimeError("clamd is not installed (apt-get install clamav-daemon; scripts/setup.sh --test)")
        self.binary = binary
        self.workdir = Path(workdir)
        self.database = self.workdir / "db"
        self.database.mkdir(parents=True, exist_ok=True)
        (self.database / "mailmoat-test.hdb").write_text(SIGNATURES)
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.ready_timeout = ready_timeout
        self.config = self.workdir / "clamd.conf"
        self.log = self.workdir / "clamd.log"
        self.config.write_text(
            "\n".join((
                "Foreground yes",
                f"TCPSocket {self.port}",
                f"TCPAddr {self.host}",
                f"DatabaseDirectory {self.database}",
                f"TemporaryDirectory {self.workdir}",
                f"PidFile {self.workdir / 'clamd.pid'}",
                f"StreamMaxLength {stream_max}",
                "MaxThreads 8",
                "ReadTimeout 30",
                "CommandReadTimeout 10",
                "SelfCheck 0",
                "ExitOnOOM yes",
                "Bytecode no",
                "",
            ))
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> ClamdServer:
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("clamd is already running")
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [self.binary, "--foreground", f"--config-file={self.config}"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )
        deadline = time.monotonic() + self.ready_timeout
        while not ping(self.port, self.host):
            if self.proc.poll() is not None:
                raise RuntimeError(f"clamd exited with {self.proc.returncode}:\n{self.tail()}")
            if time.monotonic() >= deadline:
                self.stop()
                raise RuntimeError(f"clamd not answering PING after {self.ready_timeout}s:\n{self.tail()}")
            time.sleep(0.05)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)

    def tail(self, lines: int = 30) -> str:
        if not self.log.exists():
            return "(no output)"
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> ClamdServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
