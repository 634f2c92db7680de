"""Third-party mail corpora: the ones vendored under ``tests/data`` and the optional one beside the repository."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VENDORED = {
    "cpython_email": (REPO / "tests" / "data" / "cpython_email", "msg_*.txt"),
    "mime4j": (REPO / "tests" / "data" / "mime4j", "*.msg"),
    "flanker": (REPO / "tests" / "data" / "flanker" / "messages", "*.eml"),
}
"""Corpus name: (directory, the glob of its messages). Each directory's README says where it comes from."""
SHARED = (REPO.parent / "shared" / "corpus" / "mime").resolve()
"""Not shipped: present on a development machine only (``../shared`` beside the repository)."""


def vendored() -> list[Path]:
    """Every vendored message, corpus by corpus, sorted."""
    return [path for directory, pattern in VENDORED.values() for path in sorted(directory.glob(pattern))]


def shared(corpus_dir: Path = SHARED) -> list[Path]:
    """The messages of the corpus beside the repository; empty when it is not there."""
    return sorted(corpus_dir.rglob("*.eml")) if corpus_dir.is_dir() else []


def label(path: Path) -> str:
    """``corpus/file`` for reports and test ids."""
    return f"{path.parent.name}/{path.name}"


def as_submitted(raw: bytes) -> bytes:
    """What an MTA sends for a file: every line ending made CRLF, a final CRLF."""
    text = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
    return text if text.endswith(b"\r\n") else text + b"\r\n"
