"""Egress with PIPELINING (RFC 2920) against SMTP servers on loopback.

The scripted server answers nothing of a transaction until it has read the DATA command, so a
client that waited for each reply before sending the next command would hang here: these tests
show that MAIL, RCPT and DATA really travel together, and how each reply is used.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
import trustme
import uvloop

from mailmoat_egress.delivery import Deliverer, Message, RcptResult, SessionPool, Target, Timeouts
from tests.support.sink import SmtpSink

pytestmark = pytest.mark.integration

DATA = b"From: s@out.org\r\nSubject: p\r\n\r\n.dot line\r\nbody\r\n"
TIMEOUTS = Timeouts(connect=5, command=5)


@dataclass
class Script:
    """Replies for the next transactions: the envelope replies (MAIL, each RCPT, DATA) sent in one
    write, then the reply after the content. ``close_after_mail`` drops the connection instead of
    the rest; ``close_after_content`` drops it instead of the final reply."""

    envelope: list[bytes]
    final: bytes = b"250 2.0.0 queued\r\n"
    close_after_mail: bool = False
    close_after_content: bool = False


@dataclass
class Scripted:
    scripts: list[Script]
    batches: list[list[bytes]] = field(default_factory=list)
    """The command lines read before the server answered, per transaction."""
    contents: list[bytes] = field(default_factory=list)
    resets: int = 0
    port: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 scripted ESMTP\r\n")
        try:
            while line := await reader.readline():
                verb = line[:4].upper()
                if verb == b"EHLO":
                    writer.write(b"250-scripted\r\n250-PIPELINING\r\n250-SIZE 10000000\r\n250 8BITMIME\r\n")
                elif verb == b"RSET":
                    self.resets += 1
                    writer.write(b"250 2.0.0 reset\r\n")
                elif verb == b"QUIT":
                    writer.write(b"221 2.0.0 bye\r\n")
                    break
                elif verb == b"MAIL":
                    await self._transaction(line, reader, writer)
                    if writer.is_closing():
                        break
                else:
                    writer.write(b"502 5.5.2 not here\r\n")
                await writer.drain()
        finally:
            writer.close()

    async def _transaction(self, first: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        batch = [first]
        while not batch[-1].upper().startswith(b"DATA"):
            batch.append(await reader.readline())
        self.batches.append(batch)
        script = self.scripts.pop(0)
        if script.close_after_mail:
            writer.write(script.envelope[0])
            await writer.drain()
            writer.close()
            return
        writer.write(b"".join(script.envelope))
        if script.envelope[-1].startswith(b"354"):
            content = b""
            while (line := await reader.readline()) != b".\r\n":
                content += line
            self.contents.append(content)
            if script.close_after_content:
                writer.close()
                return
            writer.write(script.final)


@pytest.fixture
async def scripted() -> AsyncIterator[Scripted]:
    server_state = Scripted(scripts=[])
    server = await asyncio.start_server(server_state.handle, "127.0.0.1", 0)
    server_state.port = server.sockets[0].getsockname()[1]
    yield server_state
    server.close()
    await server.wait_closed()


async def _deliver(port: int, message: Message, pool: SessionPool | None = None):
    own = pool is None
    pool = pool or SessionPool(local_hostname="gw.test")
    try:
        return await Deliverer(pool).deliver([Target("127.0.0.1", port, "scripted")], "none", None, message, TIMEOUTS)
    finally:
        if own:
            await pool.close()


async def test_envelope_goes_in_one_batch_and_each_recipient_gets_its_reply(scripted: Scripted) -> None:
    scripted.scripts = [Script([b"250 2.1.0 ok\r\n", b"250 2.1.5 ok\r\n", b"550-5.1.1 no such\r\n550 5.1.1 user\r\n",
                                b"452 4.2.2 full\r\n", b"354 go\r\n"])]
    message = Message("s@out.org", ["a@x.test", "b@x.test", "c@x.test"], DATA)
    results = await _deliver(scripted.port, message)
    assert [(r.recipient, r.code, r.enhanced) for r in results] == [
        ("a@x.test", 250, "2.0.0"), ("b@x.test", 550, "5.1.1"), ("c@x.test", 452, "4.2.2"),
    ]
    assert "no such user" in results[1].text
    [batch] = scripted.batches
    assert [line.split(b":")[0] for line in batch] == [b"MAIL FROM", b"RCPT TO", b"RCPT TO", b"RCPT TO", b"DATA\r\n"]
    assert batch[0].startswith(b"MAIL FROM:<s@out.org> SIZE=") and batch[1] == b"RCPT TO:<a@x.test>\r\n"
    assert scripted.contents == [DATA.replace(b"\r\n.dot", b"\r\n..dot")]  # dot-stuffed on the wire


async def test_every_recipient_refused_and_server_still_says_354(scripted: Scripted) -> None:
    """RFC 2920 3.1: a server that answers DATA with 354 after refusing every RCPT gets an empty
    message ended at once; nothing is delivered and the session is reset and reused."""
    scripted.scripts = [
        Script([b"250 ok\r\n", b"550 5.1.1 unknown\r\n", b"354 go anyway\r\n"],
               final=b"554 5.5.1 no valid recipients\r\n"),
        Script([b"250 ok\r\n", b"250 ok\r\n", b"354 go\r\n"]),
    ]
    pool = SessionPool(local_hostname="gw.test")
    try:
        [refused] = await _deliver(scripted.port, Message("s@out.org", ["nobody@x.test"], DATA), pool)
        [delivered] = await _deliver(scripted.port, Message("s@out.org", ["a@x.test"], DATA), pool)
    finally:
        await pool.close()
    assert refused.code == 550 and refused.enhanced == "5.1.1"
    assert delivered.ok
    assert scripted.contents == [b"", DATA.replace(b"\r\n.dot", b"\r\n..dot")]
    assert scripted.resets == 1 and pool.opened == 1 and pool.reused == 1


async def test_mail_refused_refuses_every_recipient(scripted: Scripted) -> None:
    scripted.scripts = [Script([b"553 5.1.8 bad sender\r\n", b"503 5.5.1 no MAIL\r\n", b"503 5.5.1 no MAIL\r\n",
                                b"503 5.5.1 no MAIL\r\n"])]
    results = await _deliver(scripted.port, Message("s@out.org", ["a@x.test", "b@x.test"], DATA))
    assert [(r.code, r.enhanced) for r in results] == [(553, "5.1.8"), (553, "5.1.8")]
    assert scripted.contents == [] and scripted.resets == 1


async def test_data_refused_after_recipients_accepted(scripted: Scripted) -> None:
    scripted.scripts = [Script([b"250 ok\r\n", b"250 ok\r\n", b"451 4.3.0 try later\r\n"])]
    [result] = await _deliver(scripted.port, Message("s@out.org", ["a@x.test"], DATA))
    assert result.code == 451 and result.enhanced == "4.3.0" and result.temporary
    assert scripted.contents == []


async def test_server_closing_after_mail_is_a_temporary_failure_with_its_reason(scripted: Scripted) -> None:
    scripted.scripts = [Script([b"421 4.3.2 shutting down\r\n"], close_after_mail=True)]
    [result] = await _deliver(scripted.port, Message("s@out.org", ["a@x.test"], DATA))
    assert result.temporary and result.code == 421
    assert "shutting down" in result.text


async def test_connection_lost_after_the_content_is_a_temporary_failure_on_a_fresh_session(
        scripted: Scripted) -> None:
    """The content went out but no final reply came: the message may or may not have arrived, so it
    is not sent again on another session now; it is retried later (a 4xx), and the session is gone."""
    scripted.scripts = [Script([b"250 ok\r\n", b"250 ok\r\n", b"354 go\r\n"], close_after_content=True),
                        Script([b"250 ok\r\n", b"250 ok\r\n", b"354 go\r\n"])]
    pool = SessionPool(local_hostname="gw.test")
    try:
        [lost] = await _deliver(scripted.port, Message("s@out.org", ["a@x.test"], DATA), pool)
        assert lost.temporary and lost.code == 421 and pool.idle_count() == 0
        [result] = await _deliver(scripted.port, Message("s@out.org", ["a@x.test"], DATA), pool)
    finally:
        await pool.close()
    assert result.ok and pool.opened == 2
    assert len(scripted.contents) == 2


def test_pipelined_over_tls_on_uvloop() -> None:
    """The services run on uvloop: the transaction hands the TLS transport to its reply reader
    and back there too, and the session stays usable."""
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    with SmtpSink(tls_context=context, pipelining=True) as sink, ca.cert_pem.tempfile() as cafile:
        sink.rcpt_replies["bad@x.test"] = "550 5.1.1 no such user"

        async def run() -> tuple[list[list[RcptResult]], int, int]:
            pool = SessionPool(local_hostname="gw.test", cafile=cafile)
            deliverer = Deliverer(pool)
            target = [Target("127.0.0.1", sink.port, "127.0.0.1")]
            try:
                return [await deliverer.deliver(target, "verify", None,
                                                Message("s@out.org", [f"r{n}@x.test", "bad@x.test"], DATA), TIMEOUTS)
                        for n in range(3)], pool.opened, pool.reused
            finally:
                await pool.close()

        batches, opened, reused = uvloop.run(run())
    assert [[r.code for r in results] for results in batches] == [[250, 550]] * 3
    assert all(r.tls for results in batches for r in results if r.ok)
    assert (opened, reused) == (1, 2)
    assert [m.rcpt_tos for m in sink.messages] == [["r0@x.test"], ["r1@x.test"], ["r2@x.test"]]
    assert all(m.data == DATA and m.tls for m in sink.messages)
