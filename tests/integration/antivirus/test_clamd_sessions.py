"""clamd sessions with the real clamd: one-chunk scans share an open session, one that clamd closed is
replaced (the scan done again on a new connection), an ERROR reply ends its session, idle ones expire.
Connections are counted by a TCP proxy in front of clamd."""

from __future__ import annotations

import pytest

from mailmoat_antivirus import clamd as clamd_module
from mailmoat_antivirus.clamd import ClamdClient
from tests.support.clamd import EICAR, ClamdServer
from tests.support.tcpproxy import TcpProxy

pytestmark = pytest.mark.integration

CLEAN = b"From: a@example.org\r\nSubject: hello\r\n\r\nnothing to see here\r\n"


async def test_one_chunk_scans_share_one_session(clamd: ClamdServer) -> None:
    with TcpProxy(clamd.port) as proxy:
        client = ClamdClient(f"127.0.0.1:{proxy.port}")
        assert (await client.scan(CLEAN)).clean
        found = await client.scan(EICAR)
        assert found.found is not None and found.found.startswith("Eicar-Test-Signature")
        assert (await client.scan(CLEAN * 100)).clean
        assert proxy.accepted == 1
        assert client.available is True


async def test_larger_streams_and_pings_open_connections_of_their_own(clamd: ClamdServer) -> None:
    with TcpProxy(clamd.port) as proxy:
        client = ClamdClient(f"127.0.0.1:{proxy.port}")
        assert (await client.scan(CLEAN)).clean
        assert (await client.scan(b"A" * (clamd_module.CHUNK + 1))).clean
        assert await client.ping()
        assert (await client.scan(CLEAN)).clean
        assert proxy.accepted == 3  # the session, the large stream, the ping


async def test_a_session_clamd_closed_is_replaced_and_the_scan_done_again(
        clamd: ClamdServer, monkeypatch: pytest.MonkeyPatch) -> None:
    # Taken as open whatever the socket says, so that the scan really meets the closed session.
    monkeypatch.setattr(clamd_module._Session, "usable", lambda self, now: True)
    with TcpProxy(clamd.port) as proxy:
        client = ClamdClient(f"127.0.0.1:{proxy.port}")
        assert (await client.scan(CLEAN)).clean
        proxy.cut()
        proxy.restore()
        found = await client.scan(EICAR)
        assert found.found is not None and found.found.startswith("Eicar-Test-Signature")
        assert proxy.accepted == 2
        assert client.available is True


async def test_an_error_reply_ends_its_session(tmp_path) -> None:
    with ClamdServer(tmp_path / "small", stream_max="1K") as small, TcpProxy(small.port) as proxy:
        client = ClamdClient(f"127.0.0.1:{proxy.port}", stream_max_length=10_000_000)
        result = await client.scan(b"A" * 2000)
        assert result.error is not None
        assert (await client.scan(CLEAN)).clean
        assert (await client.scan(CLEAN)).clean
        assert proxy.accepted == 2  # a new session after the error, then kept


async def test_sessions_unused_too_long_are_not_used_again(clamd: ClamdServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(clamd_module, "SESSION_IDLE", 0.0)
    with TcpProxy(clamd.port) as proxy:
        client = ClamdClient(f"127.0.0.1:{proxy.port}")
        for _ in range(3):
            assert (await client.scan(CLEAN)).clean
        assert proxy.accepted == 3
        client.close()
