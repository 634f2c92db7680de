"""scripts/devcert.py: the development TLS pair `make run` generates works for STARTTLS on loopback."""

from __future__ import annotations

import importlib.util
import socket
import ssl
import stat
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("devcert", REPO / "scripts" / "devcert.py")
assert spec and spec.loader
devcert = importlib.util.module_from_spec(spec)
spec.loader.exec_module(devcert)


def test_pair_is_written_once_with_a_private_key(tmp_path: Path) -> None:
    target = tmp_path / "tls"
    assert devcert.write_pair(target) is True
    first = (target / "cert.pem").read_bytes()
    assert stat.S_IMODE((target / "key.pem").stat().st_mode) == 0o600
    assert devcert.write_pair(target) is False  # an existing pair is kept
    assert (target / "cert.pem").read_bytes() == first
    assert devcert.main(["devcert.py", str(target)]) == 0
    assert devcert.main(["devcert.py"]) == 2


def test_a_client_trusting_the_certificate_verifies_localhost_and_127_0_0_1(tmp_path: Path) -> None:
    devcert.write_pair(tmp_path)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        for _ in range(2):
            conn, _ = listener.accept()
            try:
                with server_context.wrap_socket(conn, server_side=True) as tls:
                    tls.sendall(b"ok")
            except (ssl.SSLError, OSError):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client_context = ssl.create_default_context(cafile=str(tmp_path / "cert.pem"))
    try:
        for name in ("localhost", "127.0.0.1"):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
                with client_context.wrap_socket(raw, server_hostname=name) as tls:
                    assert tls.recv(2) == b"ok"
    finally:
        thread.join(timeout=5)
        listener.close()
