"""Every message of the third-party MIME corpus (real and malformed mail) through the whole pipeline:
no crash, no loss — each is delivered byte-identical after the prepended header, or refused during
SMTP with a clear 5xx reply."""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path

import pytest

from tests.e2e.test_mail_flow import strip_received
from tests.support.sink import SmtpSink

pytestmark = pytest.mark.e2e


def corpus_files(corpus_dir: Path) -> list[Path]:
    files = sorted(corpus_dir.glob("*/*.eml"))
    assert len(files) >= 50, f"corpus not found under {corpus_dir}"
    return files


def as_submitted(raw: bytes) -> bytes:
    """What an MTA sends for a file: every line ending made CRLF, a final CRLF."""
    text = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
    return text if text.endswith(b"\r\n") else text + b"\r\n"


def raw_smtp(port: int, sender: str, rcpt: str, content: bytes) -> tuple[int, str]:
    """A minimal client that sends the content exactly as given (only dot-stuffed), bare LFs and all."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        stream = sock.makefile("rb")

        def reply() -> tuple[int, str]:
            lines = []
            while True:
                line = stream.readline()
                assert line, "connection closed"
                lines.append(line.decode(errors="replace").rstrip())
                if line[3:4] != b"-":
                    return int(line[:3]), lines[-1][4:]

        assert reply()[0] == 220
        for command in (b"EHLO corpus.test", f"MAIL FROM:<{sender}>".encode(), f"RCPT TO:<{rcpt}>".encode(), b"DATA"):
            sock.sendall(command + b"\r\n")
            code, text = reply()
            if code >= 400:
                return code, text
        stuffed = re.sub(rb"(?m)^\.", b"..", content)
        if not stuffed.endswith(b"\r\n"):
            stuffed += b"\r\n"
        sock.sendall(stuffed + b".\r\n")
        result = reply()
        sock.sendall(b"QUIT\r\n")
        return result


def test_corpus_through_the_pipeline(gateway_factory, sink: SmtpSink, corpus_dir: Path) -> None:
    gateway = gateway_factory()
    expected: dict[str, bytes] = {}
    refused: dict[str, str] = {}
    for index, path in enumerate(corpus_files(corpus_dir)):
        raw = path.read_bytes()
        for mode, content in (("submitted", as_submitted(raw)), ("raw", raw)):
            rcpt = f"c{index}-{mode}@example.com"
            code, text = raw_smtp(gateway.smtp_port, "corpus@sender.org", rcpt, content)
            name = f"{path.parent.name}/{path.name} ({mode})"
            if code == 250:
                expected[rcpt] = content if content.endswith(b"\r\n") else content + b"\r\n"
            else:
                assert 500 <= code < 600 and re.match(r"5\.\d+\.\d+ \S", text), (name, code, text)
                refused[name] = f"{code} {text}"
            if mode == "submitted":
                assert code == 250 or "5.3.4" in text or "5.6.0" in text, (name, code, text)
    assert expected, "nothing was accepted"
    got = sink.wait_for(len(expected), timeout=120)
    time.sleep(1.0)
    assert len(sink.messages) == len(expected)
    for item in got:
        (rcpt,) = item.rcpt_tos
        assert strip_received(item.data)[1] == expected[rcpt], rcpt
    for name, reply in refused.items():
        assert "raw" in name or reply, name
