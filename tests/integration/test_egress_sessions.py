"""Delivery against scripted SMTP servers on loopback: greetings, STARTTLS refused, HELO-only servers,
broken sessions, the bound on sessions per destination, SMTPUTF8."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from mailmoat_egress.delivery import Deliverer, Message, SessionPool, Target, Timeouts

pytestmark = pytest.mark.integration

DATA = b"From: s@out.org\r\nTo: a@example.com\r\nSubject: scripted\r\n\r\nbody\r\n"
TIMEOUTS = Timeouts(connect=5, command=5)


@dataclass
class Scripted:
    """A line-based SMTP server whose answers a test sets (asyncio, on this test's loop)."""

    greeting: str = "220 scripted.test ESMTP"
    extensions: list[str] = field(default_factory=lambda: ["SIZE 1000000", "8BITMIME"])
    ehlo_refused: bool = False
    starttls_reply: str | None = None
    """When set, STARTTLS is offered and answered with this (never 220: no TLS here)."""
    data_delay: float = 0.0
    drop_on_mail: set[int] = field(default_factory=set)
    """MAIL commands (1-based, over all sessions) answered by closing the connection."""
    drop_after_data: set[int] = field(default_factory=set)
    """Messages (1-based) after whose content the connection is closed without a reply."""
    close_on_mail: set[int] = field(default_factory=set)
    """MAIL commands (1-based) answered with 421 and a close (a server ending an idle session)."""
    port: int = 0
    connections: int = 0
    concurrent: int = 0
    max_concurrent: int = 0
    mails: int = 0
    data_count: int = 0
    commands: list[str] = field(default_factory=list)
    messages: list[tuple[str, list[str], bytes]] = field(default_factory=list)
    _server: asyncio.Server | None = None

    async def start(self) -> Scripted:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.concurrent += 1
        self.max_concurrent = max(self.max_concurrent, self.concurrent)
        try:
            await self._session(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        finally:
            self.concurrent -= 1
            writer.close()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        def say(line: str) -> None:
            writer.write(line.encode() + b"\r\n")

        say(self.greeting)
        await writer.drain()
        mail_from, rcpts = "", []
        for _ in range(1000):
            line = await asyncio.wait_for(reader.readline(), 30)
            if not line:
                return
            command = line.decode(errors="replace").rstrip("\r\n")
            self.commands.append(command)
            verb = command[:4].upper()
            if not self.greeting.startswith("220") and verb != "QUIT":
                say("503 5.5.1 no service")
            elif verb == "EHLO":
                if self.ehlo_refused:
                    say("502 5.5.2 Error: command not recognized")
                else:
                    lines = ["scripted.test", *self.extensions]
                    if self.starttls_reply:
                        lines.append("STARTTLS")
                    for index, text in enumerate(lines):
                        say(f"250{'-' if index < len(lines) - 1 else ' '}{text}")
            elif verb == "HELO":
                say("250 scripted.test")
            elif verb == "STAR" and self.starttls_reply:
                say(self.starttls_reply)
            elif verb == "MAIL":
                self.mails += 1
                if self.mails in self.drop_on_mail:
                    return
                if self.mails in self.close_on_mail:
                    say("421 4.4.2 scripted.test closing idle connection")
                    await writer.drain()
                    return
                mail_from, rcpts = command[10:].split(">")[0].lstrip("<"), []
                say("250 2.1.0 Ok")
            elif verb == "RCPT":
                rcpts.append(command[8:].split(">")[0].lstrip("<"))
                say("250 2.1.5 Ok")
            elif verb == "DATA":
                say("354 End data with <CR><LF>.<CR><LF>")
                await writer.drain()
                content = b""
                while (chunk := await asyncio.wait_for(reader.readline(), 30)) != b".\r\n":
                    if not chunk:
                        return
                    content += chunk
                self.data_count += 1
                if self.data_count in self.drop_after_data:
                    return
                await asyncio.sleep(self.data_delay)
                self.messages.append((mail_from, rcpts, content))
                say(f"250 2.0.0 Ok: queued as S{self.data_count}")
            elif verb in ("RSET", "NOOP"):
                say("250 2.0.0 Ok")
            elif verb == "QUIT":
                say("221 2.0.0 Bye")
                await writer.drain()
                return
            else:
                say("502 5.5.2 Error: command not recognized")
            await writer.drain()


@pytest.fixture
async def servers() -> AsyncIterator[list[Scripted]]:
    started: list[Scripted] = []

    yield started
    for server in started:
        await server.stop()


async def _server(servers: list[Scripted], **kw) -> Scripted:
    server = await Scripted(**kw).start()
    servers.append(server)
    return server


async def _deliver(targets: list[Scripted], mode: str = "opportunistic", message: Message | None = None,
                   pool: SessionPool | None = None):
    own = pool is None
    pool = pool or SessionPool(local_hostname="gw.test")
    try:
        message = message or Message("s@out.org", ["a@example.com"], DATA)
        return await Deliverer(pool).deliver(
            [Target("127.0.0.1", s.port, f"h{i}") for i, s in enumerate(targets)], mode, None, message, TIMEOUTS)
    finally:
        if own:
            await pool.close()


async def test_4xx_greeting_falls_back_to_next_host(servers) -> None:
    busy = await _server(servers, greeting="421 4.3.2 busy, try later")
    good = await _server(servers)
    [result] = await _deliver([busy, good])
    assert result.ok and result.remote_host == "h1"
    assert len(good.messages) == 1 and busy.messages == []


async def test_permanent_only_when_every_host_refuses_permanently(servers) -> None:
    closed = await _server(servers, greeting="554 5.3.2 no service here")
    also_closed = await _server(servers, greeting="554 5.3.2 no service here either")
    busy = await _server(servers, greeting="421 4.3.2 busy")
    [result] = await _deliver([closed, also_closed])
    assert result.permanent and result.code == 554 and result.enhanced == "5.3.2", result.reply
    [result] = await _deliver([closed, busy])
    assert result.temporary and result.enhanced == "4.3.2", result.reply
    [result] = await _deliver([busy, closed])
    assert result.temporary and result.enhanced == "4.3.2", result.reply


async def test_starttls_refused_opportunistic_continues_in_clear(servers) -> None:
    server = await _server(servers, starttls_reply="454 4.7.0 TLS not available due to temporary reason")
    [result] = await _deliver([server], "opportunistic")
    assert result.ok and result.tls is None
    assert "STARTTLS" in server.commands and len(server.messages) == 1


@pytest.mark.parametrize("mode", ["required", "verify-ca", "verify"])
async def test_starttls_refused_when_tls_required_defers(servers, mode: str) -> None:
    server = await _server(servers, starttls_reply="454 4.7.0 TLS not available due to temporary reason")
    [result] = await _deliver([server], mode)
    assert result.temporary and result.enhanced == "4.7.4", result.reply
    assert server.mails == 0 and server.messages == [], "nothing may be sent in clear text"


async def test_helo_only_server(servers) -> None:
    server = await _server(servers, ehlo_refused=True)
    [result] = await _deliver([server], "opportunistic")
    assert result.ok
    assert any(c.upper().startswith("HELO") for c in server.commands)
    assert not any("SIZE=" in c for c in server.commands), "no extension is known after HELO"
    server2 = await _server(servers, ehlo_refused=True)
    [result] = await _deliver([server2], "required")
    assert result.temporary and result.enhanced == "4.7.4"
    assert server2.mails == 0


async def test_sessions_per_destination_are_bounded(servers) -> None:
    server = await _server(servers, data_delay=0.2)
    pool = SessionPool(local_hostname="gw.test", max_per_destination=2)
    try:
        results = await asyncio.gather(*(
            _deliver([server], message=Message("s@out.org", [f"r{n}@example.com"], DATA), pool=pool)
            for n in range(6)
        ))
    finally:
        await pool.close()
    assert all(r.ok for [r] in results)
    assert len(server.messages) == 6
    assert server.max_concurrent == 2 and server.connections == 2
    assert pool.opened == 2 and pool.reused == 4
    assert sum(c.upper() == "RSET" for c in server.commands) == 0, "no RSET on a session released moments ago"


async def test_reused_session_answering_mail_with_421_reopens(servers) -> None:
    """A session reused without RSET whose server ends it (421 to MAIL) is replaced, not deferred."""
    server = await _server(servers, close_on_mail={2})
    pool = SessionPool(local_hostname="gw.test")
    try:
        for n in range(2):
            [result] = await _deliver([server], message=Message("s@out.org", [f"r{n}@example.com"], DATA), pool=pool)
            assert result.ok, result.reply
    finally:
        await pool.close()
    assert [m[1] for m in server.messages] == [["r0@example.com"], ["r1@example.com"]]
    assert server.connections == 2 and pool.opened == 2 and pool.reused == 1


async def test_fresh_session_answering_mail_with_421_is_temporary(servers) -> None:
    server = await _server(servers, close_on_mail={1})
    [result] = await _deliver([server])
    assert result.temporary and result.code == 421, result.reply
    assert server.messages == []


async def test_session_idle_for_a_while_checked_with_rset(servers) -> None:
    server = await _server(servers)
    pool = SessionPool(local_hostname="gw.test", check_after=0.0)
    try:
        for n in range(3):
            [result] = await _deliver([server], message=Message("s@out.org", [f"r{n}@example.com"], DATA), pool=pool)
            assert result.ok, result.reply
    finally:
        await pool.close()
    assert pool.opened == 1 and pool.reused == 2
    assert sum(c.upper() == "RSET" for c in server.commands) == 2, "RSET before reusing an idle session"


async def test_reused_session_broken_before_data_reopens(servers) -> None:
    server = await _server(servers, drop_on_mail={2})
    pool = SessionPool(local_hostname="gw.test")
    try:
        for n in range(2):
            [result] = await _deliver([server], message=Message("s@out.org", [f"r{n}@example.com"], DATA), pool=pool)
            assert result.ok, result.reply
    finally:
        await pool.close()
    assert [m[1] for m in server.messages] == [["r0@example.com"], ["r1@example.com"]]
    assert server.connections == 2 and pool.opened == 2


async def test_session_broken_after_data_goes_to_next_host(servers) -> None:
    flaky = await _server(servers, drop_after_data={1})
    good = await _server(servers)
    [result] = await _deliver([flaky, good])
    assert result.ok and result.remote_host == "h1"
    assert len(good.messages) == 1 and flaky.messages == []


async def test_session_broken_on_last_host_is_temporary(servers) -> None:
    flaky = await _server(servers, drop_after_data={1})
    [result] = await _deliver([flaky])
    assert result.temporary and result.enhanced == "4.4.2", result.reply


async def test_utf8_address_without_smtputf8_fails(servers) -> None:
    server = await _server(servers)
    [result] = await _deliver([server], message=Message("s@out.org", ["jörg@example.com"], DATA, smtputf8=True))
    assert result.permanent and result.enhanced == "5.6.7", result.reply
    assert server.mails == 0


async def test_utf8_headers_without_smtputf8_fail_only_when_asked(servers) -> None:
    server = await _server(servers)
    data = "Subject: grüße\r\n\r\nbody\r\n".encode()
    [result] = await _deliver([server], message=Message("s@out.org", ["a@example.com"], data, smtputf8=True))
    assert result.permanent and result.enhanced == "5.6.9", result.reply
    [result] = await _deliver([server], message=Message("s@out.org", ["a@example.com"], data))
    assert result.ok and server.messages[0][2] == data


async def test_idle_sessions_get_quit(servers) -> None:
    server = await _server(servers)
    pool = SessionPool(local_hostname="gw.test", idle_timeout=0.0)
    await _deliver([server], pool=pool)
    assert pool.idle_count() == 1
    await asyncio.sleep(0.01)
    await pool.reap()
    assert pool.idle_count() == 0
    for _ in range(100):
        if server.concurrent == 0:
            break
        await asyncio.sleep(0.02)
    assert server.commands[-1].upper() == "QUIT" and server.concurrent == 0
