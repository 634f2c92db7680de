"""``mailmoat console create-admin | reset-password`` against the records database: the password printed once
signs in, a reset replaces it, an unknown name fails."""

from __future__ import annotations

import asyncio
import re

import pytest

from mailmoat_cli.main import main
from mailmoat_console.accounts import Accounts
from mailmoat_records import db

pytestmark = pytest.mark.integration


def signs_in(url: str, name: str, password: str) -> bool:
    async def check() -> bool:
        async with db.open_pool(url, max_size=1) as pool:
            return await Accounts(pool).authenticate(name, password) is not None

    return asyncio.run(check())


def test_console_subcommand_creates_an_admin_and_resets_a_password(database_url: str, monkeypatch, capsys) -> None:
    db.upgrade(database_url)
    monkeypatch.setenv("MAILMOAT_DATABASE_URL", database_url)
    name = "ops-cli"
    assert main(["console", "create-admin", name]) == 0
    first = re.search(r"\(shown once\): (\S+)", capsys.readouterr().out)[1]
    assert signs_in(database_url, name, first)
    assert main(["console", "reset-password", name]) == 0
    second = re.search(r"\(shown once\): (\S+)", capsys.readouterr().out)[1]
    assert second != first and signs_in(database_url, name, second) and not signs_in(database_url, name, first)
    assert main(["console", "reset-password", "nobody-here"]) == 1
