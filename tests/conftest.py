"""Fixtures shared by every test layer. Integration and e2e tests use the real RabbitMQ and Redis."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis
from hypothesis import settings

from tests.support.infra import REDIS_TEST_URL, amqp_url_for, create_vhost, delete_vhost

REPO = Path(__file__).resolve().parents[1]

# CI runs the property tests on a fixed sequence of examples, so that a run fails only for a change
# it tests; elsewhere every run draws new ones (a failure found that way becomes an @example).
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")
CORPUS = (REPO.parent / "shared" / "corpus" / "mime").resolve()


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A PostgreSQL database of the test session's own (``mailmoat_test_<pid>``, empty), dropped at the end.

    The server: ``MAILMOAT_TEST_DATABASE_URL`` (by default postgresql://postgres@127.0.0.1:5432/postgres)."""
    import psycopg
    from psycopg import sql

    server = os.environ.get("MAILMOAT_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    name = f"mailmoat_test_{os.getpid()}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield urlsplit(server)._replace(path=f"/{name}").geturl()
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="module")
def amqp_vhost() -> Iterator[str]:
    """A RabbitMQ vhost of the test module's own, deleted afterwards."""
    name = create_vhost()
    yield name
    delete_vhost(name)


@pytest.fixture(scope="module")
def amqp_url(amqp_vhost: str) -> str:
    return amqp_url_for(amqp_vhost)


@pytest.fixture
def redis_url() -> Iterator[str]:
    """Redis database 15, emptied before and after each test."""
    client = redis.Redis.from_url(REDIS_TEST_URL)
    client.flushdb()
    yield REDIS_TEST_URL
    client.flushdb()
    client.close()


@pytest.fixture
def write_policy(tmp_path: Path) -> Callable[[str], Path]:
    """Write a policy YAML (dedented) to a temporary file and return its path."""

    def _write(text: str, name: str = "policy.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    return _write


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    return CORPUS
