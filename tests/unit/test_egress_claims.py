"""Which failed Redis calls may have left a delivery lock behind, and whose locks are known dead."""

from __future__ import annotations

import os
import subprocess
import sys

from mailmoat_egress.claims import _may_have_run, owner_is_dead, owner_prefix
from mailmoat_platform.redisclient import ConnectionError as RedisConnectionError
from mailmoat_platform.redisclient import TimeoutError as RedisTimeoutError


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
    host, pid, namespace = owner_prefix().split(":")
    assert host and int(pid) == os.getpid() and namespace


def _gone_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # reaped: no process, not even a zombie, has this pid now
    return proc.pid


def test_a_process_of_this_host_that_no_longer_runs_is_dead() -> None:
    host, _, namespace = owner_prefix().split(":")
    assert owner_is_dead(f"{host}:{_gone_pid()}:{namespace}:ab12")


def test_a_running_process_another_host_or_namespace_or_form_is_not_known_dead() -> None:
    host, _, namespace = owner_prefix().split(":")
    gone = _gone_pid()
    assert not owner_is_dead(f"{host}:{os.getppid()}:{namespace}:ab12"), "running"
    assert not owner_is_dead(f"elsewhere.example:{gone}:{namespace}:ab12"), "another host"
    assert not owner_is_dead(f"{host}:{gone}:4026531836999:ab12"), "another pid namespace (a container)"
    assert not owner_is_dead(f"{host}:{gone}:-:ab12"), "no namespace known"
    assert not owner_is_dead("0123456789abcdef"), "a token of the old form"


def test_our_own_token_is_dead_unless_we_hold_it() -> None:
    token = f"{owner_prefix()}:ab12"
    assert owner_is_dead(token), "left by a take that failed on our side"
    assert not owner_is_dead(token, {token})
