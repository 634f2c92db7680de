"""The pipelined transaction's reply reader and command lines (no network)."""

from __future__ import annotations

import asyncio

import pytest
from aiosmtplib.errors import SMTPResponseException, SMTPServerDisconnected, SMTPTimeoutError

from mailmoat_egress.pipelining import ReplyReader, envelope_commands


async def test_replies_in_order_across_chunks_and_lines() -> None:
    reader = ReplyReader()
    reader.data_received(b"250 2.1.0 ok\r\n550-5.1.1 no")
    reader.data_received(b" such\r\n550 5.1.1 user\r\n35")
    first = await reader.reply(1)
    second = await reader.reply(1)
    assert (first.code, first.message) == (250, "2.1.0 ok")
    assert (second.code, second.message) == (550, "5.1.1 no such\n5.1.1 user")
    waiting = asyncio.ensure_future(reader.reply(1))
    await asyncio.sleep(0)
    assert not waiting.done()
    reader.data_received(b"4 go ahead\r\n")
    assert (await waiting).code == 354


async def test_malformed_reply_and_lost_connection_raise() -> None:
    reader = ReplyReader()
    reader.data_received(b"hello there\r\n")
    with pytest.raises(SMTPResponseException):
        await reader.reply(1)
    lost = ReplyReader()
    lost.data_received(b"250 ok\r\n")
    lost.connection_lost(None)
    assert (await lost.reply(1)).code == 250  # what arrived before the loss is still read
    with pytest.raises(SMTPServerDisconnected):
        await lost.reply(1)


async def test_no_reply_times_out() -> None:
    with pytest.raises(SMTPTimeoutError):
        await ReplyReader().reply(0.05)


def test_envelope_commands() -> None:
    lines = envelope_commands("s@out.org", ["SIZE=10", "BODY=8BITMIME"], ["a@x.test", "b@x.test"], "ascii")
    assert lines == [b"MAIL FROM:<s@out.org> SIZE=10 BODY=8BITMIME\r\n", b"RCPT TO:<a@x.test>\r\n",
                     b"RCPT TO:<b@x.test>\r\n", b"DATA\r\n"]
    assert envelope_commands("", [], ["a@x.test"], "ascii")[0] == b"MAIL FROM:<>\r\n"
    smuggled = envelope_commands("s@out.org", [], ["a@x.test>\r\nRCPT TO:<evil@y.test"], "ascii")
    assert all(line.count(b"\r\n") == 1 and b"evil" not in line for line in smuggled)  # no second command
    with pytest.raises(ValueError):
        envelope_commands("s@out.org", [], ["a b@x.test"], "ascii")
