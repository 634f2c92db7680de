"""The ingress session class stays in step with aiosmtpd: same attributes and commands."""

from __future__ import annotations

import asyncio

from aiosmtpd.smtp import SMTP

from mailmoat_ingress.smtp import IngressHandler, IngressSMTP, SessionContext, count_reply, envelope_sender
from mailmoat_policy import Policy


async def _noop(*args: object, **kwargs: object) -> None:
    return None


def _session() -> IngressSMTP:
    ctx = SessionContext(policy=Policy, publish=_noop, trace=_noop)  # type: ignore[arg-type]
    return IngressSMTP(ctx, IngressHandler(ctx), asyncio.get_running_loop())


async def test_sets_every_attribute_aiosmtpd_sets() -> None:
    ours = _session()
    theirs = SMTP(IngressHandler(ours.ctx), loop=asyncio.get_running_loop(), enable_SMTPUTF8=True)
    assert set(theirs.__dict__) <= set(ours.__dict__)
    assert set(ours._handle_hooks) >= {"EHLO", "HELO", "MAIL", "RCPT", "DATA", "RSET", "NOOP", "QUIT"}
    assert "AUTH" not in ours._smtp_methods
    assert set(ours._smtp_methods) == set(theirs._smtp_methods) - {"AUTH"} | {"PROXY"}  # PROXY: refused (proxy.py)
    assert ours._smtp_methods["MAIL"].__smtp_syntax__ == "MAIL FROM: <address>"


def test_envelope_sender() -> None:
    assert envelope_sender("<>") == ""
    assert envelope_sender(None) == ""
    assert envelope_sender("a@b.c") == "a@b.c"


def test_count_reply_ignores_continuation_lines() -> None:
    from prometheus_client import REGISTRY

    before = REGISTRY.get_sample_value("mailmoat_smtp_replies_total", {"code": "299"}) or 0
    count_reply("299-first")
    count_reply("299 last")
    assert REGISTRY.get_sample_value("mailmoat_smtp_replies_total", {"code": "299"}) == before + 1


def _lines_one_by_one(data: bytes, limit: int) -> tuple[list[bytes], bytes]:
    """What ``readuntil(b"\\r\\n")`` returns line after line until the end-of-data line or a line over
    ``limit`` (or the end of the data), and what it leaves."""
    async def run() -> tuple[list[bytes], bytes]:
        reader = asyncio.StreamReader(limit=limit)
        reader.feed_data(data)
        reader.feed_eof()
        lines: list[bytes] = []
        while True:
            try:
                line = await reader.readuntil(b"\r\n")
            except (asyncio.LimitOverrunError, asyncio.IncompleteReadError):
                break
            if line == b".\r\n":
                lines.append(line)
                break
            lines.append(line)
        return lines, bytes(reader._buffer)  # type: ignore[attr-defined]
    return asyncio.run(run())


def _lines_at_once(data: bytes, limit: int) -> tuple[list[bytes], bytes]:
    from mailmoat_ingress.smtp import take_lines

    async def run() -> tuple[list[bytes], bytes]:
        reader = asyncio.StreamReader(limit=limit)
        reader.feed_data(data)
        reader.feed_eof()
        lines: list[bytes] = []
        while (taken := take_lines(reader)) is not None:
            block, ended = taken
            lines += [line + b"\r\n" for line in block.split(b"\r\n")[:-1]]
            if ended:
                lines.append(b".\r\n")
                break
        return lines, bytes(reader._buffer)  # type: ignore[attr-defined]
    return asyncio.run(run())


def test_data_lines_taken_at_once_are_the_lines_read_one_by_one() -> None:
    """``take_lines`` takes from the reader what line-by-line reading would, up to the end-of-data line, and
    stops before a line over the reader's limit (left for the line-by-line reading that refuses it)."""
    import random

    rng = random.Random(11)
    pieces = [b"a", b"bc", b".", b"..", b"\r\n", b"\r", b"\n", b" ", b"x" * 9, b".\r\n", b"\r\n.\r\n"]
    for _ in range(5000):
        data = b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 30)))
        limit = rng.choice([8, 16, 64])
        one, left_one = _lines_one_by_one(data, limit)
        at_once, left_at_once = _lines_at_once(data, limit)
        if at_once[-1:] == [b".\r\n"]:
            assert (at_once, left_at_once) == (one, left_one), data
        else:  # stopped before a long line (or the end): line by line goes on from there the same way
            rest, left_rest = _lines_one_by_one(left_at_once, limit)
            assert (at_once + rest, left_rest) == (one, left_one), data


def test_dot_stuffing_is_undone_for_lines_taken_at_once() -> None:
    from mailmoat_ingress.smtp import unstuff

    assert unstuff(b"..a\r\nb\r\n...\r\n.\r\n") == b".a\r\nb\r\n..\r\n\r\n"
    assert unstuff(b"") == b""
