"""postsrsd (1.x, Debian's) on two loopback ports of its own: the SRS implementation Postfix users run.

Its TCP lookup tables answer ``get <address>`` with ``200 <rewritten>`` (forward port) or
``200 <original>`` (reverse port), ``500`` when it will not; addresses are URL-encoded both ways.
"""

from __future__ import annotations

import socket
import urllib.parse
from pathlib import Path

from tests.support.daemon import Daemon, find_binary
from tests.support.infra import free_port


def postsrsd_binary() -> str | None:
    return find_binary("postsrsd", "/usr/sbin/postsrsd")


class PostSrsd(Daemon):
    name = "postsrsd"

    def __init__(self, workdir: Path, domain: str, secret: bytes):
        super().__init__(workdir)
        self.domain = domain
        self.secret_file = Path(workdir) / "postsrsd.secret"
        self.secret_file.write_bytes(secret + b"\n")
        self.forward_port, self.reverse_port = free_port(), free_port()

    def command(self) -> list[str]:
        binary = postsrsd_binary()
        assert binary is not None
        return [binary, f"-s{self.secret_file}", f"-d{self.domain}", "-l127.0.0.1", "-4",
                f"-f{self.forward_port}", f"-r{self.reverse_port}"]

    def ready(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.reverse_port), timeout=0.2).close()
        except OSError:
            return False
        return True

    def _get(self, port: int, address: str) -> tuple[int, str]:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            conn.sendall(f"get {urllib.parse.quote(address)}\n".encode("ascii"))
            reply = b""
            while not reply.endswith(b"\n"):
                chunk = conn.recv(4096)
                if not chunk:
                    break
                reply += chunk
        code, _, text = reply.decode("ascii").strip().partition(" ")
        return int(code), urllib.parse.unquote(text)

    def forward(self, address: str) -> tuple[int, str]:
        return self._get(self.forward_port, address)

    def reverse(self, address: str) -> tuple[int, str]:
        return self._get(self.reverse_port, address)


__all__ = ["PostSrsd", "postsrsd_binary"]
