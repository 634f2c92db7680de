"""Egress checks addresses by the grammar ingress parsed them with: one that cannot go on a command
line fails permanently for its recipient (a DSN follows), never inside the SMTP client (a dead letter)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mailmoat_egress.delivery import Deliverer, Message, SessionPool, Target, Timeouts
from tests.support.sink import SmtpSink

pytestmark = pytest.mark.integration

DATA = b"From: s@out.org\r\nSubject: addresses\r\n\r\nbody\r\n"


@pytest.fixture(params=[False, True], ids=["one command at a time", "pipelined"])
def sink(request: pytest.FixtureRequest) -> Iterator[SmtpSink]:
    with SmtpSink(pipelining=request.param) as server:
        yield server


async def _deliver(sink: SmtpSink, message: Message):  # type: ignore[no-untyped-def]
    pool = SessionPool(local_hostname="gw.test")
    try:
        return await Deliverer(pool).deliver([Target("127.0.0.1", sink.port, "127.0.0.1")], "none", None, message,
                                             Timeouts(connect=5, command=10))
    finally:
        await pool.close()


async def test_a_recipient_that_cannot_be_sent_fails_alone(sink: SmtpSink) -> None:
    results = await _deliver(sink, Message("s@out.org", ['"unterminated@x.test', "a@example.com", "b c@x.test"], DATA))
    assert [(r.code, r.enhanced) for r in results] == [(550, "5.1.3"), (250, "2.0.0"), (550, "5.1.3")]
    assert results[0].remote_host == "" and "unterminated quoted local part" in results[0].text
    assert [m.rcpt_tos for m in sink.messages] == [["a@example.com"]]


async def test_a_sender_that_cannot_be_sent_fails_every_recipient(sink: SmtpSink) -> None:
    results = await _deliver(sink, Message("a b@out.org", ["a@example.com", "b@example.com"], DATA))
    assert [(r.code, r.enhanced) for r in results] == [(550, "5.1.7"), (550, "5.1.7")]
    assert sink.messages == []


async def test_what_ingress_accepts_is_sent_as_is(sink: SmtpSink) -> None:
    results = await _deliver(sink, Message('"john \\"jr\\" smith"@out.org', ["x%y@example.com"], DATA))
    assert [r.code for r in results] == [250]
    assert sink.messages[0].mail_from == '"john \\"jr\\" smith"@out.org'
