"""CPU seconds of each stage's own work on hostile message shapes, at two sizes: work that grows faster than
the message shows as a ratio well above the size ratio (4).

    .venv/bin/python bench/hostile_scaling.py [--small 250000] [--large 1000000] [SHAPE ...]

Each shape is a message of one repeated construct (markup left open, encoded words, dots, digits, soft line
breaks, delimiter lines, ...). The work is each fuzz target's ``test_one_input`` (the stage's pure work on the
bytes, without broker, DNS or engines, and the target's own checks), so that the figures cover what the
fuzzers exercise. Prints one line per shape and stage: seconds at each size and their ratio.
"""

from __future__ import annotations

import argparse
import base64
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fuzz.targets import antispam_content, antivirus_mime, author, console_safemail, dlp, routing_rules

HEAD = b"From: a@example.org\r\nTo: b@example.com\r\nSubject: s\r\nMIME-Version: 1.0\r\n"


def _text(body: bytes, ctype: bytes = b"text/plain", cte: bytes | None = None) -> bytes:
    head = HEAD + b"Content-Type: " + ctype + b"\r\n"
    if cte:
        head += b"Content-Transfer-Encoding: " + cte + b"\r\n"
    return head + b"\r\n" + body


def _lines(unit: bytes, count: int, width: int = 900) -> bytes:
    blob = unit * max(count, 1)
    return b"\r\n".join(blob[i : i + width] for i in range(0, len(blob), width)) + b"\r\n"


def _soft(piece: bytes, size: int) -> bytes:
    """Quoted-printable soft line breaks joining ``piece`` into one long decoded line."""
    return b"=\r\n".join([piece] * max(size // (len(piece) + 3), 1)) + b"\r\n"


SHAPES: dict[str, Callable[[int], bytes]] = {
    "html-anchors": lambda n: _text(_lines(b"<a href='http://x.example/'>y</a>", n // 35), b"text/html"),
    "html-lt": lambda n: _text(_lines(b"<", n), b"text/html"),
    "html-comment-open": lambda n: _text(_lines(b"<!--", n // 4), b"text/html"),
    "html-cdata-open": lambda n: _text(_lines(b"<![CDATA[", n // 9), b"text/html"),
    "html-end-tag-open": lambda n: _text(_lines(b"</", n // 2), b"text/html"),
    "html-div-nest": lambda n: _text(_lines(b"<div>", n // 5), b"text/html"),
    "html-list-nest": lambda n: _text(_lines(b"<ul><li>", n // 8), b"text/html"),
    "html-attr-quote": lambda n: _text(b'<a href="' + _lines(b"x", n), b"text/html"),
    "url-dots": lambda n: _text(_lines(b"http://a.", n // 9)),
    "www-dots": lambda n: _text(_lines(b"www.", n // 4)),
    "url-backslashes": lambda n: _text(_lines(b"http:\\\\a.", n // 9)),
    "colon-slash": lambda n: _text(_lines(b"a:/", n // 3)),
    "html-link-values": lambda n: _text(b"".join(b"<a href='h&#9;ttp:\\\\x%d.example/'>y</a>\r\n" % i
                                                 for i in range(n // 42)), b"text/html"),
    "at-signs": lambda n: _text(_lines(b"a@b.", n // 4)),
    "digits": lambda n: _text(_lines(b"4111 ", n // 5)),
    "spaces": lambda n: _text(_lines(b" ", n)),
    "qp-soft-breaks": lambda n: _text(_soft(b"abc def " * 8, n), cte=b"quoted-printable"),
    "qp-one-line-html": lambda n: _text(_soft(b"<a href=3D'http://x.example/'>y</a>", n), b"text/html",
                                        b"quoted-printable"),
    "base64-text": lambda n: _text(_lines(base64.b64encode(b"word " * (n // 7)), 1, 76), cte=b"base64"),
    "uu-begin": lambda n: _text(_lines(b"begin 644 a\r\n", n // 13)),
    "tiny-parts": lambda n: HEAD + b"Content-Type: multipart/mixed; boundary=b\r\n\r\n"
                            + b"--b\r\n\r\nx\r\n" * (n // 10) + b"--b--\r\n",
    "status-blocks": lambda n: HEAD + b"Content-Type: multipart/report; boundary=b\r\n\r\n--b\r\n"
                               b"Content-Type: message/delivery-status\r\n\r\n" + b"X: y\r\n\r\n" * (n // 8),
    "encoded-words": lambda n: HEAD.replace(b"Subject: s", b"Subject: " + b" ".join(
        [b"=?utf-8?q?a?="] * min(n // 14, 15_000))) + b"\r\nx\r\n",  # at most the header size limit
}

STAGES: dict[str, Callable[[bytes], None]] = {
    "antispam": antispam_content.test_one_input,
    "antivirus": antivirus_mime.test_one_input,
    "dlp": dlp.test_one_input,
    "routing": routing_rules.test_one_input,
    "console": console_safemail.test_one_input,
    "author": author.test_one_input,
}


def cpu_seconds(work: Callable[[bytes], None], data: bytes) -> float:
    started = time.process_time()
    work(data)
    return time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=250_000)
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument("shapes", nargs="*", help=f"some of: {', '.join(SHAPES)} (default: all)")
    args = parser.parse_args()
    unknown = [name for name in args.shapes if name not in SHAPES]
    if unknown:
        parser.error(f"unknown shape: {', '.join(unknown)}")
    for work in STAGES.values():  # imports, compiled patterns and caches out of the figures
        work(SHAPES["html-anchors"](1000))
    print(f"{'shape':18} {'stage':10} {'s @ ' + str(args.small):>12} {'s @ ' + str(args.large):>12} {'ratio':>6}")
    for name in args.shapes or SHAPES:
        small, large = SHAPES[name](args.small), SHAPES[name](args.large)
        for stage, work in STAGES.items():
            a, b = cpu_seconds(work, small), cpu_seconds(work, large)
            ratio = b / a if a >= 0.005 else float("nan")
            print(f"{name:18} {stage:10} {a:12.3f} {b:12.3f} {ratio:6.1f}", flush=True)


if __name__ == "__main__":
    main()
