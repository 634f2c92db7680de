"""The console's API against its own OpenAPI document (schemathesis): no input it generates, signed in as an
admin or not signed in at all, makes the console answer with a server error."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from tests.support.console import fresh_database, running_console

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is not installed")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402

pytestmark = pytest.mark.e2e
EXAMPLES = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def console_api(database_url: str) -> Iterator[tuple[str, str]]:
    """The running console (a database of its own): (URL, first admin password)."""
    with fresh_database(database_url, "schema") as url, running_console(url) as started:
        yield started


@pytest.fixture(scope="module")
def console_schema(console_api: tuple[str, str]):
    return schemathesis.openapi.from_url(f"{console_api[0]}/api/openapi.json")


@pytest.fixture(scope="module")
def admin(console_api: tuple[str, str]) -> tuple[requests.Session, str]:
    """A signed-in admin's HTTP session and CSRF token."""
    url, password = console_api
    session = requests.Session()
    answer = session.post(f"{url}/api/session", json={"name": "admin", "password": password}, timeout=10)
    assert answer.status_code == 200, answer.text
    return session, answer.json()["csrf_token"]


def fuzz(schema, call, skip: set[tuple[str, str]] = frozenset()) -> list[str]:
    """Generated cases of every operation (but ``skip``) through ``call``; the operations run. (Schemathesis'
    own pytest integration needs pytest internals that pytest 9 removed: hypothesis drives it here.)"""
    ran = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if (operation.method.upper(), operation.path) in skip:
            continue

        @EXAMPLES
        @given(case=operation.as_strategy())
        def check(case) -> None:
            call(case)

        check()
        ran.append(f"{operation.method.upper()} {operation.path}")
    return ran


def test_signed_in_as_admin(console_schema, console_api: tuple[str, str], admin: tuple[requests.Session, str]) -> None:
    session, csrf = admin
    ran = fuzz(console_schema, lambda case: case.call_and_validate(
        base_url=console_api[0], session=session, headers={"X-CSRF-Token": csrf}, checks=[not_a_server_error],
        timeout=30), skip={("DELETE", "/api/session")})
    assert "GET /api/trace" in ran and "PATCH /api/accounts/{account_id}" in ran


def test_not_signed_in(console_schema, console_api: tuple[str, str]) -> None:
    ran = fuzz(console_schema, lambda case: case.call_and_validate(
        base_url=console_api[0], session=requests.Session(), checks=[not_a_server_error], timeout=30))
    assert "POST /api/session" in ran
