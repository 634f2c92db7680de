"""Which failed Redis calls may have left a delivery lock behind (and are cleaned up after)."""

from __future__ import annotations

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from mailmoat_egress.claims import _may_have_run, owner_prefix


def _raised(exc: BaseException, cause: BaseException | None = None) -> BaseException:
    try:
        raise exc from cause
    except BaseException as caught:
        return caught


def test_a_refused_connection_never_reached_redis() -> None:
    assert not _may_have_run(_raised(RedisConnectionError("Error 111 connecting"), ConnectionRefusedError(111)))
    assert not _may_have_run(ConnectionRefusedError(111))


def test_a_timeout_or_a_broken_connection_may_have_run() -> None:
    assert _may_have_run(RedisTimeoutError("Timeout reading from 127.0.0.1:6379"))
    assert _may_have_run(_raised(RedisConnectionError("Connection reset by peer"), ConnectionResetError(104)))


def test_tokens_name_their_owner() -> None:
    host, pid = owner_prefix().rsplit(":", 1)
    assert host and pid.isdigit()
