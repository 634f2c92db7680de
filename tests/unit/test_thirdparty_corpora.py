"""Third-party mail through every fuzz target that takes a whole message: the vendored corpora
(``tests/support/corpora.py``: CPython's, Mime4j's and flanker's test messages) always, and
``../shared/corpus/mime`` when it is there. Each message goes in as the file holds it and as an MTA
submits it (CRLF lines); a target raises only on a bug."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.corpora import as_submitted, label, shared, vendored

WHOLE_MESSAGE = ("antispam_content", "antivirus_mime", "authentication", "author", "console_safemail",
                 "dkim_sign", "dlp", "mime_parts", "routing_rules")
"""The targets whose input is one raw RFC 5322 message (the others take framed or structured input)."""
DSN_FIELDS = (b"sender@example.org\x00\x00r@example.com\x00\x00550 5.1.1 no such user\x00\x005.1.1\x00\x00"
              b"mx.example.com\x00\x00")
"""The ``dsn`` target's fields before the original message (see its docstring)."""


def _targets() -> dict[str, Callable[[bytes], None]]:
    found = {name: importlib.import_module(f"fuzz.targets.{name}").test_one_input for name in WHOLE_MESSAGE}
    dsn = importlib.import_module("fuzz.targets.dsn").test_one_input
    found["dsn"] = lambda data: dsn(DSN_FIELDS + data)
    return found


TARGETS = _targets()


def _forms(path: Path) -> list[bytes]:
    raw = path.read_bytes()
    submitted = as_submitted(raw)
    return [raw] if submitted == raw else [raw, submitted]


def test_the_vendored_corpora_are_there() -> None:
    assert len(vendored()) >= 120, [label(p) for p in vendored()]


@pytest.mark.parametrize("path", vendored(), ids=label)
@pytest.mark.parametrize("target", sorted(TARGETS))
def test_vendored(target: str, path: Path) -> None:
    for data in _forms(path):
        TARGETS[target](data)


@pytest.mark.parametrize("path", shared(), ids=label)
@pytest.mark.parametrize("target", sorted(TARGETS))
def test_shared(target: str, path: Path) -> None:
    for data in _forms(path):
        TARGETS[target](data)
