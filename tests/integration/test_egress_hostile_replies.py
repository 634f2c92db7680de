"""Delivery against a server that answers MAIL, RCPT, DATA and the content with any reply line at all,
with and without PIPELINING: a recipient counts as delivered only when the server took the content
after a 354 and answered it with 2xx, having accepted MAIL and that recipient with 2xx. Every other
answer is a refusal by its class (4xx deferred, 5xx bounced) or, when it is no answer an SMTP server
may give there (2xx to DATA, 1xx, 3xx, 6xx and up), a temporary failure: the message is tried again,
never counted delivered on a reply that did not take it, never lost."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailmoat_egress.delivery import Deliverer, Message, SessionPool, Target, Timeouts

pytestmark = pytest.mark.integration

DATA = b"From: s@out.org\r\nTo: a@example.com\r\nSubject: replies\r\n\r\nbody\r\n"
TIMEOUTS = Timeouts(connect=5, command=5)


@dataclass
class Answering:
    """An SMTP server that answers each of MAIL, RCPT (in order), DATA and the content with a set line."""

    mail: str = "250 2.1.0 ok"
    rcpts: list[str] = field(default_factory=list)
    data: str = "354 go ahead"
    final: str = "250 2.0.0 queued"
    pipelining: bool = True
    received: list[list[str]] = field(default_factory=list)
    """The recipients each content was taken for (RCPT answered 2xx), one list per message."""
    port: int = 0
    _server: asyncio.Server | None = None

    async def __aenter__(self) -> Answering:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 5)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            await self._session(reader, writer)
        writer.close()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        def say(line: str) -> None:
            writer.write(line.encode("utf-8", "surrogateescape") + b"\r\n")

        say("220 answering.test ESMTP")
        rcpt = 0
        taken: list[str] = []
        for _ in range(100):
            await writer.drain()
            line = (await asyncio.wait_for(reader.readline(), 10)).decode("utf-8", "replace").rstrip("\r\n")
            verb = line[:4].upper()
            if not line or verb == "QUIT":
                say("221 bye")
                return
            if verb == "EHLO":
                say("250-answering.test")
                say("250-PIPELINING" if self.pipelining else "250-8BITMIME")
                say("250 SIZE 1000000")
            elif verb == "MAIL":
                rcpt, taken = 0, []
                say(self.mail)
            elif verb == "RCPT":
                reply = self.rcpts[rcpt] if rcpt < len(self.rcpts) else "250 2.1.5 ok"
                if reply.startswith("2") and self.mail.startswith("2"):
                    taken.append(line[8:].strip("<>"))
                rcpt += 1
                say(reply)
            elif verb == "DATA":
                say(self.data)
                if self.data.startswith("354"):
                    await writer.drain()
                    content = b""
                    while (chunk := await asyncio.wait_for(reader.readline(), 10)) != b".\r\n":
                        if not chunk:
                            return
                        content += chunk
                    if content and self.final.startswith("2"):
                        self.received.append(taken)
                    say(self.final)
            else:  # RSET, NOOP
                say("250 2.0.0 ok")


async def _deliver(server: Answering, recipients: list[str]):
    pool = SessionPool(local_hostname="gw.test")
    try:
        return await Deliverer(pool).deliver([Target("127.0.0.1", server.port, "answering.test")], "opportunistic",
                                             None, Message("s@out.org", recipients, DATA), TIMEOUTS)
    finally:
        await pool.close()


UNEXPECTED_AT_DATA = ["250 2.0.0 ok, no need", "220 hello", "100 wait", "300 go on", "600 what"]


@pytest.mark.parametrize("pipelining", [True, False])
@pytest.mark.parametrize("reply", UNEXPECTED_AT_DATA)
async def test_a_reply_to_data_that_is_no_go_ahead_is_never_a_delivery(pipelining: bool, reply: str) -> None:
    async with Answering(data=reply, pipelining=pipelining) as server:
        [result] = await _deliver(server, ["a@example.com"])
    assert server.received == []
    assert result.temporary and not result.ok, result.reply
    assert result.enhanced == "4.5.0" and reply in result.reply


@pytest.mark.parametrize("pipelining", [True, False])
async def test_any_2xx_accepts_mail_and_rcpt(pipelining: bool) -> None:
    """RFC 5321 4.2.1: a 2xx reply is a positive completion, 251 and 252 to RCPT included (as Postfix reads them)."""
    rcpts = ["252 2.1.5 cannot verify, will try", "251 2.1.5 will forward"]
    async with Answering(mail="251 2.1.0 sender ok", rcpts=rcpts, pipelining=pipelining) as server:
        results = await _deliver(server, ["a@example.com", "b@example.com"])
    assert [r.ok for r in results] == [True, True], [r.reply for r in results]
    assert server.received == [["a@example.com", "b@example.com"]]


@pytest.mark.parametrize("pipelining", [True, False])
async def test_a_recipient_accepted_with_252_is_not_delivered_when_the_content_is_refused(pipelining: bool) -> None:
    async with Answering(rcpts=["252 2.1.5 will try"], final="452 4.3.1 full", pipelining=pipelining) as server:
        [result] = await _deliver(server, ["a@example.com"])
    assert result.temporary and result.code == 452, result.reply


@pytest.mark.parametrize("pipelining", [True, False])
@pytest.mark.parametrize("reply", ["354 more?", "100 wait", "600 what", "199 eh"])
async def test_a_final_reply_that_is_no_answer_defers(pipelining: bool, reply: str) -> None:
    async with Answering(final=reply, pipelining=pipelining) as server:
        [result] = await _deliver(server, ["a@example.com"])
    assert result.temporary and not result.ok and result.enhanced == "4.5.0", result.reply


@pytest.mark.parametrize("pipelining", [True, False])
@pytest.mark.parametrize("where", ["mail", "rcpt"])
@pytest.mark.parametrize("reply", ["100 wait", "300 go on", "354 go ahead", "600 what", "999 odd"])
async def test_a_reply_to_mail_or_rcpt_that_is_no_answer_defers(pipelining: bool, where: str, reply: str) -> None:
    script = {"mail": reply} if where == "mail" else {"rcpts": [reply]}
    async with Answering(pipelining=pipelining, **script) as server:  # type: ignore[arg-type]
        [result] = await _deliver(server, ["a@example.com"])
    assert server.received == []
    assert result.temporary and result.enhanced == "4.5.0", result.reply


CODES = st.one_of(st.sampled_from([250, 251, 252, 221, 200, 354, 334, 421, 450, 452, 550, 552, 554]),
                  st.integers(0, 999))
TEXT = st.sampled_from(["", "ok", "2.0.0 ok", "4.2.2 full", "5.1.1 no", "5.0.0 eh", "\u00e4 8-bit"])
GARBAGE = st.sampled_from(["hello", "25", " 250 ok", "+250 ok", "2500 ok", "250\tok", "-250 ok", "2_5 ok"])
REPLY = st.one_of(st.builds(lambda code, text: f"{code:03d} {text}".rstrip(), CODES, TEXT), GARBAGE)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mail=REPLY, rcpts=st.lists(REPLY, min_size=1, max_size=3), data=REPLY, final=REPLY, pipelining=st.booleans())
def test_delivered_only_when_the_server_took_the_content(mail: str, rcpts: list[str], data: str, final: str,
                                                          pipelining: bool) -> None:
    recipients = [f"r{i}@example.com" for i in range(len(rcpts))]

    async def run():
        async with Answering(mail=mail, rcpts=rcpts, data=data, final=final, pipelining=pipelining) as server:
            return server, await _deliver(server, recipients)

    server, results = asyncio.run(run())
    assert [r.recipient for r in results] == recipients
    taken = {r for message in server.received for r in message}
    for result in results:
        assert result.ok or result.temporary or result.permanent, result.reply
        assert 200 <= result.code < 600, result.reply
        if result.ok:
            assert result.recipient in taken, (result.reply, mail, rcpts, data, final)
