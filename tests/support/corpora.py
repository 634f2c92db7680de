"""Third-party mail corpora: the ones vendored under ``tests/data`` and the optional one beside the repository."""

from __future__ import annotations

from pathlib import Path

from fuzz.corpus import as_submitted

REPO = Path(__file__).resolve().parents[2]
VENDORED = {
    "cpython_email": (REPO / "tests" / "data" / "cpython_email", "msg_*.txt"),
    "mime4j": (REPO / "tests" / "data" / "mime4j", "*.msg"),
    "flanker": (REPO / "tests" / "data" / "flanker" / "messages", "*.eml"),
}
"""Corpus name: (directory, the glob of its messages). Each directory's README says where it comes from."""
SHARED = (REPO.parent / "shared" / "corpus" / "mime").resolve()
"""Not shipped: present on a development machine only (``../shared`` beside the repository)."""
__all__ = ["SHARED", "VENDORED", "as_submitted", "label", "shared", "vendored"]


def vendored() -> list[Path]:
    """Every vendored message, corpus by corpus, sorted."""
    return [path for directory, pattern in VENDORED.values() for path in sorted(directory.glob(pattern))]


def shared(corpus_dir: Path = SHARED) -> list[Path]:
    """The messages of the corpus beside the repository; empty when it is not there."""
    return sorted(corpus_dir.rglob("*.eml")) if corpus_dir.is_dir() else []


def label(path: Path) -> str:
    """``corpus/file`` for reports and test ids."""
    return f"{path.parent.name}/{path.name}"
