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
