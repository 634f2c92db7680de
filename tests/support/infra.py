"""Real infrastructure for tests: an isolated RabbitMQ vhost, a Redis database, free ports."""

from __future__ import annotations

import atexit
import os
import random
import socket
import subprocess
import time
import uuid

RABBITMQ_HOST = os.environ.get("MAILMOAT_TEST_RABBITMQ_HOST", "127.0.0.1")
RABBITMQ_PORT = int(os.environ.get("MAILMOAT_TEST_RABBITMQ_PORT", "5672"))
REDIS_TEST_URL = os.environ.get("MAILMOAT_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


# Test servers get ports below the kernel's ephemeral range: a port the kernel hands out (bind to
# port 0) can meanwhile become the source port of some outgoing connection (to the broker, Redis, a
# sink), and the server that was meant to bind it then fails with "address already in use".
_PORT_RANGE = (10000, max(10001, min(_ephemeral_low(), 32768)))
_given: set[int] = set()


def _bindable(port: int, host: str) -> bool:
    for address in {host, "0.0.0.0"}:  # a server may bind the wildcard address
        with socket.socket() as sock:
            try:
                sock.bind((address, port))
            except OSError:
                return False
    return True


def free_port_block(block: int = 1, host: str = "127.0.0.1", tries: int = 2000) -> int:
    """The first of ``block`` consecutive free ports, none of them given out before in this process."""
    for _ in range(tries):
        base = random.randrange(_PORT_RANGE[0], _PORT_RANGE[1] - block + 1)
        ports = range(base, base + block)
        if any(p in _given for p in ports) or not all(_bindable(p, host) for p in ports):
            continue
        _given.update(ports)
        return base
    raise RuntimeError(f"no block of {block} free ports in {_PORT_RANGE}")


def free_port(host: str = "127.0.0.1") -> int:
    """A free port for a test server (see ``free_port_block``)."""
    return free_port_block(1, host)


def create_vhost() -> str:
    """A fresh RabbitMQ vhost (rabbitmqctl) so tests never see each other's queues."""
    name = f"mailmoat-test-{uuid.uuid4().hex[:10]}"
    subprocess.run(["rabbitmqctl", "-q", "add_vhost", name], check=True, capture_output=True)
    subprocess.run(
        ["rabbitmqctl", "-q", "set_permissions", "-p", name, "guest", ".*", ".*", ".*"],
        check=True,
        capture_output=True,
    )
    return name


SETTLE_SECONDS = 5.0
"""How long a used vhost rests before it is deleted: deleting quorum queues right after heavy use can
crash RabbitMQ 3.10's log segment writer, so vhosts are deleted a few seconds later."""

_retired: list[tuple[float, str]] = []


def _delete(name: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", "delete_vhost", name], capture_output=True, timeout=120)


def delete_vhost(name: str) -> None:
    """Retire ``name``: it is deleted once it has rested ``SETTLE_SECONDS`` (at the latest at exit)."""
    now = time.monotonic()
    _retired.append((now, name))
    while _retired and now - _retired[0][0] >= SETTLE_SECONDS:
        _delete(_retired.pop(0)[1])


@atexit.register
def _delete_retired() -> None:
    while _retired:
        retired_at, name = _retired.pop(0)
        time.sleep(max(0.0, SETTLE_SECONDS - (time.monotonic() - retired_at)))
        _delete(name)


def amqp_url_for(vhost: str, host: str = RABBITMQ_HOST, port: int = RABBITMQ_PORT) -> str:
    return f"amqp://guest:guest@{host}:{port}/{vhost}"
