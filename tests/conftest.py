"""Fixtures shared by every test layer. Integration and e2e tests use the real RabbitMQ and Redis."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from tests.support.infra import REDIS_TEST_URL, amqp_url_for, create_vhost, delete_vhost

REPO = Path(__file__).resolve().parents[1]
CORPUS = (REPO.parent / "shared" / "corpus" / "mime").resolve()


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
