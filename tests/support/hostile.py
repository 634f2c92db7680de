"""A hostile MIME corpus the project generates itself: messages nobody wrote by hand.

Each ``Case`` is a message as a client sends it in DATA (CRLF lines, before dot-stuffing) and what the
gateway must make of it with every filter stage on (connection filter, antivirus with clamd,
antispam) and the default policy actions:

- ``deliver``: delivered, byte-identical below the headers the gateway prepends;
- ``quarantine``: held (malware, or content the antivirus stage could not examine);
- ``refuse``: refused during SMTP with a 5xx reply (bare CR or LF: ingress refuses them).

Nothing may be dead-lettered or lost. The corpus is deterministic (same bytes every run), so it
doubles as fuzz seeds. ``python -m tests.support.hostile DIR`` writes it out as ``DIR/<name>.eml``.
"""

from __future__ import annotations

import base64
import sys
from dataclasses import dataclass
from pathlib import Path

EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
CRLF = b"\r\n"


@dataclass(frozen=True)
class Case:
    name: str
    data: bytes
    expect: str
    """``deliver``, ``quarantine`` or ``refuse``."""
    why: str = ""


def head(name: str, extra: list[bytes] | None = None, subject: bytes | None = None) -> list[bytes]:
    """Ordinary top-level fields (so the antispam stage has no reason to complain) plus ``extra``."""
    return [
        b"From: Hostile Corpus <corpus@sender.example.org>",
        b"To: recipient@example.com",
        b"Subject: " + (subject if subject is not None else f"hostile corpus: {name}".encode()),
        b"Date: Mon, 02 Mar 2026 10:00:00 +0000",
        f"Message-ID: <hostile-{name}@sender.example.org>".encode(),
        b"MIME-Version: 1.0",
        *(extra or []),
    ]


def join(*chunks: list[bytes]) -> bytes:
    """Lines (given in one or more lists) as CRLF-ended bytes."""
    return CRLF.join(line for chunk in chunks for line in chunk) + CRLF


def multipart(name: str, parts: list[list[bytes]], boundary: bytes = b"hostile-b", *,
              ctype: bytes | None = None, close: bool = True, subject: bytes | None = None) -> bytes:
    """A multipart/mixed message whose parts are given as their lines (header fields, blank, body)."""
    ctype = ctype if ctype is not None else b'Content-Type: multipart/mixed; boundary="' + boundary + b'"'
    lines = [*head(name, [ctype], subject), b"", b"This is a multi-part message in MIME format."]
    for part in parts:
        lines += [b"--" + boundary, *part]
    if close:
        lines.append(b"--" + boundary + b"--")
    return join(lines)


def text_part(body: bytes = b"Hello, this is an ordinary text part.", *fields: bytes) -> list[bytes]:
    return [b"Content-Type: text/plain; charset=us-ascii", *fields, b"", body]


def attachment(fields: list[bytes], payload: bytes, encoding: bytes = b"base64") -> list[bytes]:
    lines = [*fields, b"Content-Transfer-Encoding: " + encoding, b""]
    if encoding == b"base64":
        lines += base64.encodebytes(payload).rstrip(b"\n").split(b"\n")
    else:
        lines += payload.split(CRLF)
    return lines


PDF = b"%PDF-1.4\n% harmless hostile-corpus document\n" * 20


def nested(name: str, depth: int) -> bytes:
    """``depth`` multiparts, each the only part of the one above, a text leaf at the bottom."""
    lines = [*head(name, [b"Content-Type: multipart/mixed; boundary=n0"]), b""]
    for level in range(depth):
        lines.append(b"--n%d" % level)
        if level + 1 < depth:
            lines += [b"Content-Type: multipart/mixed; boundary=n%d" % (level + 1), b""]
    lines += [b"Content-Type: text/plain", b"", b"The bottom of the nest."]
    for level in reversed(range(depth)):
        lines.append(b"--n%d--" % level)
    return join(lines)


def cases() -> list[Case]:
    out: list[Case] = []

    def add(name: str, data: bytes, expect: str = "deliver", why: str = "") -> None:
        out.append(Case(name, data, expect, why))

    # --- raw 8-bit header values and parameters ------------------------------------------------
    add("8bit-filename-latin1", multipart("8bit-filename-latin1", [
        text_part(),
        attachment([b'Content-Type: text/plain; name="Fr\xf6sche.txt"',
                    b'Content-Disposition: attachment; filename="Fr\xf6sche.txt"'], b"frogs\r\n"),
    ]), why="issue 13: the antivirus stage raised 'Header' object has no attribute 'split'")
    add("8bit-filename-utf8", multipart("8bit-filename-utf8", [
        text_part(),
        attachment([b"Content-Type: application/pdf",
                    b'Content-Disposition: attachment; filename="B\xc3\xa4r.pdf"'], PDF),
    ]))
    add("8bit-subject-and-from", join(
        [b"From: J\xf6rg M\xfcller <joerg@sender.example.org>", b"To: recipient@example.com",
         b"Subject: Gr\xfc\xdfe aus M\xfcnchen \xe2\x82\xac", b"Date: Mon, 02 Mar 2026 10:00:00 +0000",
         b"Message-ID: <hostile-8bit-subject-and-from@sender.example.org>", b"MIME-Version: 1.0",
         b"Content-Type: text/plain; charset=iso-8859-1", b"Content-Transfer-Encoding: 8bit", b"",
         b"Sch\xf6ne Gr\xfc\xdfe."]))
    add("8bit-content-type-and-disposition", multipart("8bit-content-type-and-disposition", [
        text_part(),
        attachment([b"Content-Type: appl\xefcation/\xff\xfe; name=\xe4", b"Content-Disposition: \xe4ttachment"],
                   b"opaque bytes\r\n", b"7bit"),
    ]))
    add("8bit-boundary", multipart("8bit-boundary", [text_part(), text_part(b"second")], boundary=b"\xe4\xf6\xfc-b"))
    add("8bit-header-name", join(head("8bit-header-name", [b"X-F\xf6\xf6: bar", b"Content-Type: text/plain"]),
                                 [b"", b"A field whose name is not ASCII."]))

    # --- RFC 2231 ------------------------------------------------------------------------------
    add("rfc2231-continuations", multipart("rfc2231-continuations", [
        text_part(),
        attachment([b"Content-Type: application/pdf; name*0*=utf-8''Jahres; name*1*=bericht%20%C3%BC; name*2=.pdf",
                    b"Content-Disposition: attachment;",
                    b" filename*0*=utf-8''Jahres; filename*1*=bericht%20%C3%BC;",
                    b" filename*2=.pdf"], PDF),
    ]))
    add("rfc2231-unknown-charset", multipart("rfc2231-unknown-charset", [
        text_part(),
        attachment([b"Content-Type: application/octet-stream",
                    b"Content-Disposition: attachment; filename*=x-klingon'tlh'%E4%F6%FC.dat"], b"\x00\x01\x02" * 40),
    ]))
    add("rfc2231-broken", multipart("rfc2231-broken", [
        text_part(),
        attachment([b"Content-Type: application/octet-stream; name*0*=''%; name*1*=%ZZ; name*3=gap",
                    b"Content-Disposition: attachment; filename*=utf-8'; filename*0*=punycode''%FF%FE; filename*1=x"],
                   b"bytes\r\n", b"7bit"),
    ]))

    # --- charsets ------------------------------------------------------------------------------
    for charset in (b"x-klingon", b"\xff\xfe", b"punycode", b"base64", b"utf-7", b'"', b"utf-8''"):
        label = charset.decode("latin-1").encode("ascii", "backslashreplace").decode().replace("\\", "").replace(
            "'", "q").replace('"', "dq") or "empty"
        add(f"charset-{label}", join(head(f"charset-{label}", [b"Content-Type: text/plain; charset=" + charset,
                                                                b"Content-Transfer-Encoding: 8bit"]),
                                     [b"", b"Caf\xe9 cr\xe8me \xe2\x82\xac +AGEAYgBj- \xff\xfe\x00"]))

    # --- boundaries ----------------------------------------------------------------------------
    add("multipart-without-boundary", multipart("multipart-without-boundary", [text_part()],
                                                ctype=b"Content-Type: multipart/mixed"))
    add("boundary-never-used", multipart("boundary-never-used", [text_part()], boundary=b"used",
                                         ctype=b'Content-Type: multipart/mixed; boundary="declared"'))
    add("boundary-never-closed", multipart("boundary-never-closed", [
        text_part(), attachment([b"Content-Type: application/pdf; name=r.pdf"], PDF)], close=False))
    add("boundary-duplicated-parameter", multipart("boundary-duplicated-parameter", [text_part(), text_part(b"b")],
                                                   boundary=b"second",
                                                   ctype=b'Content-Type: multipart/mixed; boundary="first"; '
                                                         b'boundary="second"'))
    add("boundary-reused-inside", multipart("boundary-reused-inside", [
        [b"Content-Type: multipart/alternative; boundary=hostile-b", b"", b"--hostile-b", *text_part(b"inner")],
        text_part(b"outer"),
    ]))
    add("boundary-empty", multipart("boundary-empty", [text_part()], boundary=b"",
                                    ctype=b'Content-Type: multipart/mixed; boundary=""'))
    add("boundary-2231", multipart("boundary-2231", [text_part(), text_part(b"x")], boundary=b"b\xc3\xa4",
                                   ctype=b"Content-Type: multipart/mixed; boundary*=utf-8''b%C3%A4"))

    # --- nesting -------------------------------------------------------------------------------
    add("nested-100", nested("nested-100", 100))
    add("nested-200", nested("nested-200", 200), "quarantine",
        "deeper than the antivirus stage examines (128 levels): unscannable, quarantined by default")
    add("rfc822-base64", multipart("rfc822-base64", [
        text_part(),
        attachment([b"Content-Type: message/rfc822", b"Content-Disposition: attachment"],
                   join(head("inner", [b"Content-Type: text/plain"]), [b"", b"inner text"])),
    ]))
    add("rfc822-8bit-inside", multipart("rfc822-8bit-inside", [
        text_part(),
        [b"Content-Type: message/rfc822", b"", b"From: \xe4 <x@y.example>", b"Subject: \xff\xfe",
         b'Content-Type: text/plain; name="\xe4.txt"', b"", b"inner 8-bit \xe4"],
    ]))

    # --- NUL, transfer encodings ---------------------------------------------------------------
    add("nul-bytes", multipart("nul-bytes", [
        text_part(b"text with a \x00 NUL"),
        attachment([b'Content-Type: application/octet-stream; name="a\x00b.txt"',
                    b'Content-Disposition: attachment; filename="evil.exe\x00.txt"'], b"\x00\x00nul\x00", b"8bit"),
    ]))
    add("base64-truncated", multipart("base64-truncated", [
        text_part(),
        [b"Content-Type: application/pdf; name=t.pdf", b"Content-Transfer-Encoding: base64", b"",
         base64.b64encode(PDF)[:301]],
    ]))
    add("base64-garbage", multipart("base64-garbage", [
        text_part(),
        [b"Content-Type: application/octet-stream; name=g.bin", b"Content-Transfer-Encoding: base64", b"",
         b"!!!! not ~~ base64 @@@@ ====", b"QUJD=RE==VG", b"===="],
    ]))
    add("qp-broken", join(head("qp-broken", [b"Content-Type: text/plain; charset=utf-8",
                                             b"Content-Transfer-Encoding: quoted-printable"]),
                          [b"", b"=ZZ =E2=82 soft break at the end=", b"=", b"=0D=0A=00 encoded NUL and CRLF"]))
    add("cte-unknown-and-on-multipart", multipart("cte-unknown-and-on-multipart", [
        attachment([b"Content-Type: text/plain"], b"x-foo encoded?", b"x-foo"),
        text_part(),
    ], ctype=b'Content-Type: multipart/mixed; boundary="hostile-b"\r\nContent-Transfer-Encoding: base64'))
    add("uuencode-truncated", join(head("uuencode-truncated", [b"Content-Type: text/plain"]),
                                   [b"", b"begin 644 cut.exe", b"M35J0``,````$````__\\``+@`````````0`````````",
                                      b"M``"]), "quarantine",
        "a truncated uuencoded block is still decoded: cut.exe, a blocked file type")
    add("content-type-garbage", join(head("content-type-garbage", [b"Content-Type: ;;;/;=\"", b"Content-Type: text"]),
                                     [b"", b"which type?"]))
    add("header-only", join(head("header-only", [b"Content-Type: multipart/mixed; boundary=x"])))

    # --- sizes (within the limits) -------------------------------------------------------------
    to_field = [b"To: " + b", ".join(b"r%d@example.com" % i for i in range(5))]
    to_field += [b"\t" + b", ".join(b"folded%d-%d@example.com" % (line, i) for i in range(20)) for line in range(300)]
    add("huge-folded-header", join(head("huge-folded-header", [b"X-Long:" + b" word" * 190]), to_field,
                                   [b"Content-Type: text/plain", b"", b"A header section of about 200 KB."]))
    add("many-fields", join(head("many-fields", [b"X-Field-%d: value %d" % (i, i) for i in range(2000)]
                                 + [b"Content-Type: text/plain"]), [b"", b"Two thousand fields."]))
    add("many-parts", multipart("many-parts", [text_part(b"part %d" % i) for i in range(1100)]), "refuse",
        "more MIME parts than limits.max_mime_parts (1000): refused at the end of DATA")
    add("parts-at-limit", multipart("parts-at-limit", [text_part(b"part %d" % i) for i in range(999)]), "deliver",
        "999 parts and the multipart holding them: the limit, not over it")
    add("status-blocks", multipart("status-blocks", [
        [b"Content-Type: message/delivery-status", b"", *[b"X-Block: %d\r\n" % i for i in range(1200)]],
    ], ctype=b"Content-Type: multipart/report; report-type=delivery-status; boundary=\"hostile-b\""), "refuse",
        "a delivery-status part of 1200 field blocks, one MIME entity each: over limits.max_mime_parts")

    # --- encoded words -------------------------------------------------------------------------
    add("encoded-word-abuse", join(head("encoded-word-abuse", [
        b"Content-Type: multipart/mixed; boundary=ew",
        b"X-Words: " + b" ".join(b"=?utf-8?b?w6Q=?=" for _ in range(50)),
    ], subject=b"=?x-unknown?q?caf=E9?= =?utf-8?b?!!!?= =?utf-8?q?=ZZ?= =?=?utf-8?q?nested?=?= =?utf-8?b?"),
        [b"", b"--ew", b'Content-Type: application/pdf; name="=?utf-8?b?UmVjaG51bmcucGRm?="',
           b'Content-Disposition: attachment; filename="=?iso-8859-1?q?R=E9sum=E9?=.pdf"',
           b"Content-Transfer-Encoding: base64", b"", *base64.encodebytes(PDF).rstrip(b"\n").split(b"\n"),
           b"--ew--"]))

    # --- malware in hostile wrapping: must still be found --------------------------------------
    add("eicar-8bit-name", multipart("eicar-8bit-name", [
        text_part(),
        attachment([b'Content-Type: application/octet-stream; name="R\xe9sum\xe9.com"',
                    b'Content-Disposition: attachment; filename="R\xe9sum\xe9.com"'], EICAR),
    ]), "quarantine", "EICAR behind a raw 8-bit file name")
    add("eicar-rfc2231", multipart("eicar-rfc2231", [
        text_part(),
        attachment([b"Content-Type: application/octet-stream",
                    b"Content-Disposition: attachment; filename*0*=x-bogus''%E4; filename*1=.com"], EICAR),
    ]), "quarantine", "EICAR behind an RFC 2231 name in an unknown charset")

    # --- refused during SMTP -------------------------------------------------------------------
    add("qp-bare-cr", join(head("qp-bare-cr", [b"Content-Type: text/plain",
                                               b"Content-Transfer-Encoding: quoted-printable"]),
                           [b"", b"a bare\rCR inside quoted-printable"]), "refuse", "bare CR (RFC 5322 2.3)")
    add("bare-lf", join(head("bare-lf", [b"Content-Type: text/plain"]), [b"", b"a bare\nLF line"]), "refuse",
        "bare LF (RFC 5322 2.3)")
    return out


def write(directory: Path) -> list[Path]:
    """Write every case as ``<name>.eml`` (the bytes sent in DATA); returns the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for case in cases():
        path = directory / f"{case.name}.eml"
        path.write_bytes(case.data)
        paths.append(path)
    return paths


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "tests/data/hostile")
    print(f"{len(write(target))} messages written to {target}")
