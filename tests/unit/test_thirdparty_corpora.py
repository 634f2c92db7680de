"""Third-party mail through every fuzz target that takes a whole message: the vendored corpora
(``tests/support/corpora.py``: CPython's, Mime4j's and flanker's test messages) always, and
``../shared/corpus/mime`` when it is there. Each message goes in as the file holds it and as an MTA
submits it (CRLF lines); a target raises only on a bug."""

from __future__ import annotations

from pathlib import Path

import pytest

from fuzz.corpus import forms, targets
from tests.support.corpora import label, shared, vendored

TARGETS = targets()


def test_the_vendored_corpora_are_there() -> None:
    assert len(vendored()) >= 120, [label(p) for p in vendored()]


@pytest.mark.parametrize("path", vendored(), ids=label)
@pytest.mark.parametrize("target", sorted(TARGETS))
def test_vendored(target: str, path: Path) -> None:
    for data in forms(path.read_bytes()):
        TARGETS[target](data)


@pytest.mark.parametrize("path", shared(), ids=label)
@pytest.mark.parametrize("target", sorted(TARGETS))
def test_shared(target: str, path: Path) -> None:
    for data in forms(path.read_bytes()):
        TARGETS[target](data)
