"""The test TCP proxy really cuts and restores a connection to Redis."""

from __future__ import annotations

import pytest
import redis

from tests.support.tcpproxy import TcpProxy


def test_cut_and_restore() -> None:
    proxy = TcpProxy(6379).start()
    try:
        client = redis.Redis(port=proxy.port, socket_timeout=2, socket_connect_timeout=2)
        assert client.ping()
        proxy.cut()
        with pytest.raises(redis.exceptions.ConnectionError):
            client.ping()
        proxy.restore()
        assert redis.Redis(port=proxy.port, socket_timeout=2).ping()
    finally:
        proxy.stop()
