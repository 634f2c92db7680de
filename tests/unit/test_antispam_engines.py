"""Rspamd and spamd clients against tiny fake servers over loopback (the real daemons are in
tests/integration/test_antispam_engines_real.py): scores come back when they answer, None when they are
down, slow or answer garbage."""

from __future__ import annotations

import asyncio
import json

from aiohttp import web

from mailmoat_antispam.engines import parse_spamd, rspamd_check, rspamd_headers, spamd_check
from mailmoat_platform.models import Envelope

MSG = b"From: a@b.test\r\nSubject: x\r\n\r\nbody\r\n"
ENV = Envelope(client_ip="192.0.2.1", helo="h.test", mail_from="a@b.test", rcpt_to=["c@example.com"])


async def _rspamd_app(behaviour: str) -> tuple[web.AppRunner, int, list[dict]]:
    seen: list[dict] = []

    async def check(request: web.Request) -> web.Response:
        seen.append({"body": await request.read(), "ip": request.headers.get("IP"),
                     "rcpt": request.headers.get("Rcpt")})
        if behaviour == "slow":
            await asyncio.sleep(5)
        if behaviour == "garbage":
            return web.Response(text="not json")
        return web.Response(text=json.dumps({"score": 7.5, "required_score": 15, "action": "add header"}))

    app = web.Application()
    app.router.add_post("/checkv2", check)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, port, seen


async def test_rspamd_score_is_read() -> None:
    runner, port, seen = await _rspamd_app("ok")
    try:
        result = await rspamd_check(f"http://127.0.0.1:{port}", ENV, MSG, 2)
    finally:
        await runner.cleanup()
    assert result is not None and result.score == 7.5 and result.required == 15
    assert seen == [{"body": MSG, "ip": "192.0.2.1", "rcpt": "c@example.com"}]


async def test_rspamd_slow_garbage_or_down_gives_none() -> None:
    for behaviour in ("slow", "garbage"):
        runner, port, _ = await _rspamd_app(behaviour)
        try:
            assert await rspamd_check(f"http://127.0.0.1:{port}", ENV, MSG, 0.5) is None
        finally:
            await runner.cleanup()
    runner, port, _ = await _rspamd_app("ok")
    await runner.cleanup()
    assert await rspamd_check(f"http://127.0.0.1:{port}", ENV, MSG, 0.5) is None


async def _spamd(answer: bytes | None) -> tuple[asyncio.Server, int, list[bytes]]:
    got: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.startswith(b"Content-length")))
        got.append(head + await reader.readexactly(length))
        if answer is None:
            await asyncio.sleep(5)
        else:
            writer.write(answer)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], got


async def test_spamd_check_speaks_spamc() -> None:
    server, port, got = await _spamd(b"SPAMD/1.1 0 EX_OK\r\nSpam: True ; 15.2 / 5.0\r\n\r\n")
    async with server:
        result = await spamd_check(f"127.0.0.1:{port}", MSG, 2)
    assert result is not None and result.score == 15.2 and result.required == 5.0
    assert got[0].startswith(b"CHECK SPAMC/1.5\r\nContent-length: %d\r\n" % len(MSG)) and got[0].endswith(MSG)


async def test_spamd_silent_or_down_gives_none() -> None:
    server, port, _ = await _spamd(None)
    async with server:
        assert await spamd_check(f"127.0.0.1:{port}", MSG, 0.5) is None
    assert await spamd_check(f"127.0.0.1:{port}", MSG, 0.5) is None


def test_parse_spamd_answers() -> None:
    assert parse_spamd(b"SPAMD/1.5 0 EX_OK\r\nSpam: False ; -1.5 / 5.0\r\n\r\n").score == -1.5  # type: ignore[union-attr]
    assert parse_spamd(b"SPAMD/1.0 76 Bad header line\r\n") is None
    assert parse_spamd(b"HTTP/1.1 200 OK\r\n") is None


def test_rspamd_headers_name_every_recipient_and_leave_out_unknowns() -> None:
    headers = rspamd_headers(Envelope(mail_from="", rcpt_to=["c@example.com", "d@example.com"]))
    assert headers.getall("Rcpt") == ["c@example.com", "d@example.com"]
    assert headers["From"] == "<>" and "IP" not in headers and "Helo" not in headers


async def test_spamd_answer_in_pieces_is_read_whole() -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        for piece in (b"SPAMD/1.1 0 EX_OK\r\n", b"Spam: True ; 1000.0 / 5.0\r\n\r\n"):
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.05)
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    async with server:
        result = await spamd_check(f"127.0.0.1:{server.sockets[0].getsockname()[1]}", MSG, 2)
    assert result is not None and result.score == 1000.0
