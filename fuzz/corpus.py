"""Run mail nobody here wrote through every fuzz target that takes a whole message, once each.

    python -m fuzz.corpus PATH ...            # .eml files, or directories of them (every file inside)
    python -m fuzz.corpus --spam-assassin     # the SpamAssassin public corpus `make accuracy` caches

Each message goes in as the file holds it and as an MTA submits it (CRLF line ends). A target raises only
on a bug: each failure is printed with its traceback (the first of each kind per target, the input kept in
``var/fuzz/corpus-failures/``), and so is each input that took a target more than ``--slow`` CPU seconds.
Exit status 1 when anything failed. ``tests/unit/test_thirdparty_corpora.py`` does the same for the
vendored corpora in ``make test``.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WHOLE_MESSAGE = ("antispam_content", "antivirus_mime", "authentication", "author", "console_safemail",
                 "dkim_sign", "dlp", "mime_parts", "routing_rules")
"""The targets whose input is one raw RFC 5322 message (the others take framed or structured input)."""
DSN_FIELDS = (b"sender@example.org\x00\x00r@example.com\x00\x00550 5.1.1 no such user\x00\x005.1.1\x00\x00"
              b"mx.example.com\x00\x00")
"""The ``dsn`` target's fields before the original message (see its docstring)."""


def targets() -> dict[str, Callable[[bytes], None]]:
    """Target name: a function of one whole message."""
    found = {name: importlib.import_module(f"fuzz.targets.{name}").test_one_input for name in WHOLE_MESSAGE}
    dsn = importlib.import_module("fuzz.targets.dsn").test_one_input
    found["dsn"] = lambda data: dsn(DSN_FIELDS + data)
    return found


def as_submitted(raw: bytes) -> bytes:
    """What an MTA sends for a file: every line ending made CRLF, a final CRLF."""
    text = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
    return text if text.endswith(b"\r\n") else text + b"\r\n"


def forms(raw: bytes) -> list[bytes]:
    """The message as written and, when that differs, as submitted."""
    submitted = as_submitted(raw)
    return [raw] if submitted == raw else [raw, submitted]


def _files(paths: list[Path]) -> Iterator[tuple[str, bytes]]:
    for path in paths:
        for file in sorted(path.rglob("*")) if path.is_dir() else [path]:
            if file.is_file():
                yield str(file), file.read_bytes()


def _spam_assassin() -> Iterator[tuple[str, bytes]]:
    from mailmoat_antispam import accuracy

    tarball = accuracy.find_tarball()
    if tarball is None:
        sys.exit("no SpamAssassin corpus cached: run `bash scripts/setup.sh --accuracy` first")
    for sample in accuracy.corpus(tarball):
        yield f"{sample.group}/{sample.checksum}", sample.data


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="*", type=Path)
    parser.add_argument("--spam-assassin", action="store_true", help="the corpus `make accuracy` caches")
    parser.add_argument("--slow", type=float, default=1.0, help="CPU seconds over which an input is reported")
    args = parser.parse_args()
    if not args.paths and not args.spam_assassin:
        parser.error("name files or directories, or --spam-assassin")
    runs = targets()
    kept = REPO / "var" / "fuzz" / "corpus-failures"
    seen: set[tuple[str, str]] = set()
    failures = messages = 0
    for label, raw in [*(_spam_assassin() if args.spam_assassin else ()), *_files(args.paths)]:
        messages += 1
        for data in forms(raw):
            for name, run in runs.items():
                start = time.process_time()
                try:
                    run(data)
                except Exception as exc:  # a target raises only on a bug: report every one
                    failures += 1
                    kind = (name, type(exc).__name__)
                    print(f"FAIL {name} {label}: {type(exc).__name__}: {str(exc)[:200]}", flush=True)
                    if kind not in seen:
                        seen.add(kind)
                        kept.mkdir(parents=True, exist_ok=True)
                        (kept / f"{name}-{hashlib.sha256(data).hexdigest()[:16]}").write_bytes(data)
                        traceback.print_exc(limit=6)
                spent = time.process_time() - start
                if spent > args.slow:
                    print(f"SLOW {name} {label}: {spent:.2f} s", flush=True)
    print(f"{messages} messages through {len(runs)} targets: {failures} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
