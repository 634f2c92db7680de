"""Test messages with attachments, built as raw bytes (CRLF), and archives built in memory."""

from __future__ import annotations

import base64
import io
import quopri
import tarfile
import zipfile
from collections.abc import Iterable


def message(attachments: Iterable[tuple[str, str, bytes, str]] = (), *, body: bytes = b"Hello.\r\n",
            subject: str = "test", boundary: str = "=_mm_b0undary") -> bytes:
    """A multipart/mixed message; each attachment is (filename, content type, bytes, transfer encoding)
    with encoding ``base64``, ``quoted-printable``, ``x-uuencode``, ``7bit`` or ``rfc822`` (bytes are a message)."""
    lines = [
        b"From: Sender <sender@outside.test>",
        b"To: alice@example.com",
        b"Subject: " + subject.encode(),
        b"Message-ID: <av-test@outside.test>",
        b"MIME-Version: 1.0",
        f'Content-Type: multipart/mixed; boundary="{boundary}"'.encode(),
        b"",
        b"This is a multi-part message in MIME format.",
        b"--" + boundary.encode(),
        b"Content-Type: text/plain; charset=us-ascii",
        b"",
        body.rstrip(b"\r\n"),
    ]
    for filename, content_type, data, encoding in attachments:
        lines.append(b"--" + boundary.encode())
        if encoding == "rfc822":
            lines += [b"Content-Type: message/rfc822", b"Content-Disposition: attachment", b"", data.rstrip(b"\r\n")]
            continue
        lines += [
            f'Content-Type: {content_type}; name="{filename}"'.encode(),
            f'Content-Disposition: attachment; filename="{filename}"'.encode(),
            f"Content-Transfer-Encoding: {encoding}".encode(),
            b"",
        ]
        if encoding == "base64":
            lines += base64.encodebytes(data).rstrip(b"\n").split(b"\n")
        elif encoding == "quoted-printable":
            lines += quopri.encodestring(data).replace(b"\r\n", b"\n").rstrip(b"\n").split(b"\n")
        elif encoding == "x-uuencode":
            lines += uuencode(data, filename)
        else:
            lines += data.replace(b"\r\n", b"\n").rstrip(b"\n").split(b"\n")
    lines += [b"--" + boundary.encode() + b"--", b""]
    return b"\r\n".join(lines)


def uuencode(data: bytes, filename: str) -> list[bytes]:
    import binascii

    out = [f"begin 644 {filename}".encode()]
    for start in range(0, len(data), 45):
        out.append(binascii.b2a_uu(data[start : start + 45]).rstrip(b"\n"))
    out += [b"`", b"end"]
    return out


def zip_of(members: Iterable[tuple[str, bytes]], *, compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in members:
            archive.writestr(name, data)
    return buffer.getvalue()


def tar_of(members: Iterable[tuple[str, bytes]], mode: str = "w") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as archive:  # type: ignore[call-overload]
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def nested_zip(inner: bytes, name: str, depth: int) -> bytes:
    """``inner`` as ``name`` inside ``depth`` zips, each in the next."""
    data, member = inner, name
    for level in range(depth):
        data = zip_of([(member, data)])
        member = f"level{level}.zip"
    return data


def ratio_bomb(size: int = 200 * 1024 * 1024) -> bytes:
    """A zip of one member of ``size`` zero bytes (about 230:1), written without holding it in memory."""
    buffer = io.BytesIO()
    block = b"\0" * (1024 * 1024)
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive, \
            archive.open("zeros.bin", "w") as out:
        for _ in range(size // len(block)):
            out.write(block)
    return buffer.getvalue()


def mz_executable() -> bytes:
    """A minimal PE-looking file (MZ header, PE signature): harmless, but an executable by type."""
    header = bytearray(b"MZ" + b"\0" * 62)
    header[0x3C:0x40] = (64).to_bytes(4, "little")
    return bytes(header) + b"PE\0\0" + b"\0" * 200
