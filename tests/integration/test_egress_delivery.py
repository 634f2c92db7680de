"""Delivery against real SMTP servers on loopback: the TLS modes, fallback, pooling, MAIL parameters."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from mailmoat_egress.delivery import Deliverer, Message, SessionPool, Target, Timeouts
from tests.support.infra import free_port
from tests.support.sink import SmtpSink

pytestmark = pytest.mark.integration

DATA = b"From: s@out.org\r\nTo: a@example.com\r\nSubject: tls\r\n\r\n.leading dot\r\nbody \xc3\xa9\r\n"
TIMEOUTS = Timeouts(connect=5, command=10)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def ca_file(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = Path(tmp_path_factory.mktemp("ca")) / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def _server_context(ca: trustme.CA, *names: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*names).configure_cert(context)
    return context


@pytest.fixture(scope="module", params=["one command at a time", "pipelined"])
def sinks(request: pytest.FixtureRequest, ca: trustme.CA) -> Iterator[dict[str, SmtpSink]]:
    """The servers, offering PIPELINING or not: every test here runs against both kinds."""
    pipelining = request.param == "pipelined"
    servers = {
        "plain": SmtpSink(pipelining=pipelining),
        "good": SmtpSink(tls_context=_server_context(ca, "localhost", "127.0.0.1"), pipelining=pipelining),
        "wrong": SmtpSink(tls_context=_server_context(ca, "wrong.example"), pipelining=pipelining),
    }
    for sink in servers.values():
        sink.start()
    yield servers
    for sink in servers.values():
        sink.stop()


@pytest.fixture(autouse=True)
def _clear(sinks: dict[str, SmtpSink]) -> None:
    for sink in sinks.values():
        sink.messages.clear()
        sink.data_replies.clear()
        sink.rcpt_replies.clear()


async def _deliver(sink: SmtpSink, mode: str, cafile: str | None, *, tls_name: str | None = None,
                   message: Message | None = None, pool: SessionPool | None = None):
    pool = pool or SessionPool(local_hostname="gw.test", cafile=cafile)
    try:
        message = message or Message("s@out.org", ["a@example.com"], DATA)
        return await Deliverer(pool).deliver([Target("127.0.0.1", sink.port, "127.0.0.1")], mode, tls_name,
                                             message, TIMEOUTS)
    finally:
        await pool.close()


# (server, mode, use test CA, delivered?, over TLS?, status when not delivered)
CASES = [
    ("plain", "none", True, True, False, None),
    ("good", "none", True, True, False, None),
    ("plain", "opportunistic", True, True, False, None),
    ("good", "opportunistic", False, True, True, None),
    ("wrong", "opportunistic", False, True, True, None),
    ("plain", "required", True, False, None, "4.7.4"),
    ("wrong", "required", False, True, True, None),
    ("good", "verify-ca", True, True, True, None),
    ("wrong", "verify-ca", True, True, True, None),
    ("good", "verify-ca", False, False, None, "4.7.5"),
    ("plain", "verify-ca", True, False, None, "4.7.4"),
    ("good", "verify", True, True, True, None),
    ("wrong", "verify", True, False, None, "4.7.5"),
    ("plain", "verify", True, False, None, "4.7.4"),
]


@pytest.mark.parametrize(("server", "mode", "trusted", "delivered", "tls", "status"), CASES)
async def test_tls_modes(sinks, ca_file, server, mode, trusted, delivered, tls, status) -> None:
    sink = sinks[server]
    [result] = await _deliver(sink, mode, ca_file if trusted else None)
    if delivered:
        assert result.ok, result.reply
        assert len(sink.messages) == 1
        assert sink.messages[0].data == DATA
        assert sink.messages[0].tls is tls
    else:
        assert result.temporary and not result.ok, result.reply
        assert result.enhanced == status, result.reply
        assert sink.messages == [], "nothing may be delivered in clear text"


async def test_verify_uses_tls_name(sinks, ca_file) -> None:
    [result] = await _deliver(sinks["wrong"], "verify", ca_file, tls_name="wrong.example")
    assert result.ok, result.reply
    [result] = await _deliver(sinks["good"], "verify", ca_file, tls_name="wrong.example")
    assert result.enhanced == "4.7.5"


async def test_per_recipient_replies_and_mail_parameters(sinks) -> None:
    sink = sinks["plain"]
    sink.rcpt_replies["bad@example.com"] = "550 5.1.1 no such user"
    sink.rcpt_replies["later@example.com"] = "450 4.2.1 mailbox busy"
    message = Message("s@out.org", ["a@example.com", "bad@example.com", "later@example.com"], DATA,
                      smtputf8=True, body_type="8BITMIME")
    results = await _deliver(sink, "none", None, message=message)
    assert [(r.recipient, r.code, r.enhanced) for r in results] == [
        ("a@example.com", 250, "2.0.0"), ("bad@example.com", 550, "5.1.1"), ("later@example.com", 450, "4.2.1"),
    ]
    assert all(r.remote_host == "127.0.0.1" for r in results)
    [got] = sink.messages
    assert got.rcpt_tos == ["a@example.com"]
    assert got.data == DATA
    options = [o.upper() for o in got.mail_options]
    assert f"SIZE={len(DATA)}" in options and "BODY=8BITMIME" in options and "SMTPUTF8" in options


async def test_data_rejected(sinks) -> None:
    sinks["plain"].data_replies.append("554 5.7.1 content refused")
    [result] = await _deliver(sinks["plain"], "none", None)
    assert result.code == 554 and result.enhanced == "5.7.1" and result.permanent


async def test_null_sender(sinks) -> None:
    [result] = await _deliver(sinks["plain"], "none", None, message=Message("", ["a@example.com"], DATA))
    assert result.ok
    assert sinks["plain"].messages[0].mail_from == "<>" or sinks["plain"].messages[0].mail_from == ""


async def test_host_fallback(sinks) -> None:
    closed = free_port()
    pool = SessionPool(local_hostname="gw.test")
    try:
        results = await Deliverer(pool).deliver(
            [Target("127.0.0.1", closed, "dead"), Target("127.0.0.1", sinks["plain"].port, "alive")],
            "opportunistic", None, Message("s@out.org", ["a@example.com"], DATA), TIMEOUTS)
    finally:
        await pool.close()
    assert results[0].ok and results[0].remote_host == "alive"
    assert len(sinks["plain"].messages) == 1


async def test_all_hosts_down_is_temporary() -> None:
    pool = SessionPool(local_hostname="gw.test")
    results = await Deliverer(pool).deliver([Target("127.0.0.1", free_port(), "x")], "none", None,
                                            Message("s@out.org", ["a@example.com"], DATA), TIMEOUTS)
    assert results[0].temporary and results[0].enhanced == "4.4.1"


async def test_session_reused_with_rset(sinks, ca_file) -> None:
    pool = SessionPool(local_hostname="gw.test", cafile=ca_file)
    deliverer = Deliverer(pool)
    target = [Target("127.0.0.1", sinks["good"].port, "127.0.0.1")]
    try:
        for n in range(3):
            [result] = await deliverer.deliver(target, "verify", None,
                                               Message("s@out.org", [f"r{n}@example.com"], DATA), TIMEOUTS)
            assert result.ok
    finally:
        await pool.close()
    assert pool.opened == 1 and pool.reused == 2
    assert [m.rcpt_tos for m in sinks["good"].messages] == [["r0@example.com"], ["r1@example.com"], ["r2@example.com"]]
    assert all(m.tls for m in sinks["good"].messages)


async def test_idle_sessions_reaped(sinks) -> None:
    pool = SessionPool(local_hostname="gw.test", idle_timeout=0.0)
    deliverer = Deliverer(pool)
    target = [Target("127.0.0.1", sinks["plain"].port, "p")]
    try:
        for _ in range(2):
            await deliverer.deliver(target, "none", None, Message("s@out.org", ["a@example.com"], DATA), TIMEOUTS)
    finally:
        await pool.close()
    assert pool.opened == 2 and pool.reused == 0


async def test_sessions_not_shared_across_checked_names(sinks, ca_file) -> None:
    """A session verified for one name is not reused for another name on the same address."""
    pool = SessionPool(local_hostname="gw.test", cafile=ca_file)
    deliverer = Deliverer(pool)
    target = [Target("127.0.0.1", sinks["good"].port, "127.0.0.1")]
    try:
        for name in ("localhost", "127.0.0.1", "localhost"):
            [result] = await deliverer.deliver(target, "verify", name,
                                               Message("s@out.org", ["a@example.com"], DATA), TIMEOUTS)
            assert result.ok and result.tls in ("TLSv1.2", "TLSv1.3"), result.reply
    finally:
        await pool.close()
    assert pool.opened == 2 and pool.reused == 1
