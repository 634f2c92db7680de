"""Raw SMTP over a socket, for tests that must see each reply exactly as the server sent it."""

from __future__ import annotations

import socket
import ssl


def reply(sock: socket.socket | ssl.SSLSocket) -> str:
    """One whole SMTP reply (continuation lines joined), or "" when the server closed the connection."""
    data = b""
    while True:
        chunk = sock.recv(1)
        if not chunk:
            return data.decode()
        data += chunk
        if data.endswith(b"\r\n"):
            last = data.split(b"\r\n")[-2]
            if len(last) < 4 or last[3:4] == b" ":
                return data.decode().strip()


def command(sock: socket.socket | ssl.SSLSocket, line: bytes) -> str:
    """Send one command line; its reply."""
    sock.sendall(line + b"\r\n")
    return reply(sock)
