"""A real clamd for the antivirus tests: one per test session, with the suite's own signatures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.clamd import ClamdServer


@pytest.fixture(scope="session")
def clamd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClamdServer]:
    with ClamdServer(Path(tmp_path_factory.mktemp("clamd"))) as server:
        yield server
