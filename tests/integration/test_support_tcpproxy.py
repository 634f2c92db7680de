"""The test TCP proxy really cuts, delays and restores connections to the real Redis."""

from __future__ import annotations

import socket
import time

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.support.tcpproxy import TcpProxy


def client(port: int) -> redis.Redis:
    return redis.Redis(port=port, socket_timeout=3, socket_connect_timeout=3, retry=Retry(NoBackoff(), 0))


def test_cut_and_restore() -> None:
    with TcpProxy(6379) as proxy:
        connected = client(proxy.port)
        assert connected.ping()
        assert proxy.connections == 1
        proxy.cut()
        with pytest.raises(redis.exceptions.ConnectionError):
            connected.ping()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", proxy.port), timeout=2)
        assert proxy.connections == 0
        proxy.restore()
        assert client(proxy.port).ping()
        assert connected.ping()  # a client that reconnects works again


def test_delay_holds_traffic() -> None:
    with TcpProxy(6379) as proxy:
        conn = client(proxy.port)
        assert conn.ping()
        proxy.delay(0.4)
        started = time.monotonic()
        assert conn.ping()
        assert time.monotonic() - started >= 0.8  # 0.4 s each way
        proxy.restore()
        started = time.monotonic()
        assert conn.ping()
        assert time.monotonic() - started < 0.3


def test_stop_closes_the_port() -> None:
    proxy = TcpProxy(6379).start()
    assert client(proxy.port).ping()
    proxy.stop()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", proxy.port), timeout=2)
