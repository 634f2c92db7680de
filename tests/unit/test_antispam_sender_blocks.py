"""The antispam stage's decision with senders blocked from the console (``mailmoat_records.senderblocks``):
the same verdict, SCL, category, SFV and report as the policy's ``antispam.blocked_senders``; the policy's
allow lists still win; an entry ends at its expiry; the in-process copy is read again after its TTL and kept
when the database does not answer."""

from __future__ import annotations

import time

import psycopg
import pytest

from mailmoat_antispam.check import Checker
from mailmoat_antispam.score import report_tokens
from mailmoat_platform.models import Envelope
from mailmoat_policy import parse_policy
from mailmoat_records.senderblocks import BlockError, BlockList, CachedBlockList, normalize

HEAD = b"From: Ann <ann@sender.test>\r\nTo: bob@example.com\r\nSubject: Hello\r\n" \
       b"Date: Mon, 2 Nov 2026 10:00:00 +0000\r\nMessage-ID: <m1@sender.test>\r\n\r\nhello\r\n"
FAR = time.time() + 86400


def envelope(mail_from: str = "ann@sender.test") -> Envelope:
    return Envelope(id="Q1", client_ip="192.0.2.7", helo="mx.sender.test", mail_from=mail_from,
                    rcpt_to=["bob@example.com"])


def fixed(listed: BlockList) -> CachedBlockList:
    async def load() -> BlockList:
        return listed
    return CachedBlockList("postgresql://unused", loader=load)


async def outcome(policy_text: str = "{}", listed: BlockList | None = None, data: bytes = HEAD,
                  mail_from: str = "ann@sender.test"):
    checker = Checker(blocks=fixed(listed) if listed is not None else None)
    env = envelope(mail_from)
    out = await checker.check(env, data, parse_policy(policy_text), authenticate_sender=False)
    return out, report_tokens(out.verdict, env)


@pytest.mark.parametrize(("policy_text", "listed"), [
    ("antispam: {blocked_senders: [ann@sender.test]}", BlockList(senders={"ann@sender.test": FAR})),
    ("antispam: {blocked_domains: [sender.test]}", BlockList(domains={"sender.test": FAR})),
])
async def test_a_console_entry_blocks_exactly_as_the_policy_list(policy_text: str, listed: BlockList) -> None:
    by_policy, policy_report = await outcome(policy_text)
    by_console, console_report = await outcome(listed=listed)
    assert by_console.verdict.result == by_policy.verdict.result == "hcspam"
    assert by_console.verdict.detail == by_policy.verdict.detail
    assert by_console.verdict.detail["scl"] == 9 and by_console.verdict.detail["sfv"] == "SKB"
    assert by_console.allowed == by_policy.allowed and by_console.allowed.kind == "blocked"
    assert console_report == policy_report and "SFV:SKB" in console_report and "CAT:HSPM" in console_report


async def test_a_subdomain_and_a_from_address_are_blocked_too() -> None:
    out, _ = await outcome(listed=BlockList(domains={"sender.test": FAR}), mail_from="bounce@mail.sender.test")
    assert out.verdict.detail["sfv"] == "SKB"
    out, _ = await outcome(listed=BlockList(senders={"ann@sender.test": FAR}), mail_from="other@relay.test")
    assert out.verdict.detail["sfv"] == "SKB"  # the From address, as the policy list


async def test_policy_allow_lists_win_and_others_pass() -> None:
    out, _ = await outcome("antispam: {allowed_senders: [ann@sender.test]}",
                           BlockList(domains={"sender.test": FAR}))
    assert out.verdict.result == "allowed" and out.verdict.detail["scl"] == -1
    out, _ = await outcome(listed=BlockList(senders={"someone@sender.test": FAR}, domains={"other.test": FAR}))
    assert out.verdict.result == "clean" and out.verdict.detail["sfv"] == "NSPM"


async def test_an_expired_entry_blocks_nothing_even_from_the_cached_copy() -> None:
    out, _ = await outcome(listed=BlockList(senders={"ann@sender.test": time.time() - 1}))
    assert out.verdict.result == "clean"


async def test_the_copy_is_read_again_after_its_ttl_and_kept_when_the_database_fails() -> None:
    now = [100.0]
    reads: list[str] = []
    answers: list[BlockList | Exception] = [BlockList(senders={"a@x.test": FAR}),
                                            psycopg.OperationalError("down"), BlockList(domains={"y.test": FAR})]

    async def load() -> BlockList:
        reads.append("read")
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    cache = CachedBlockList("postgresql://unused", ttl=30, loader=load, clock=lambda: now[0])
    assert (await cache.current()).senders == {"a@x.test": FAR} and cache.problem is None
    now[0] = 129.0
    await cache.current()
    assert len(reads) == 1  # within the TTL: no read
    now[0] = 130.0
    assert (await cache.current()).senders == {"a@x.test": FAR}  # the read failed: the last copy
    assert cache.problem and "OperationalError" in cache.problem and len(reads) == 2
    now[0] = 140.0
    await cache.current()
    assert len(reads) == 2  # no retry before the TTL either
    now[0] = 160.0
    assert (await cache.current()).domains == {"y.test": FAR} and cache.problem is None


async def test_a_stale_copy_is_named_in_the_verdict_notes() -> None:
    async def down() -> BlockList:
        raise OSError("unreachable")

    checker = Checker(blocks=CachedBlockList("postgresql://unused", loader=down))
    out = await checker.check(envelope(), HEAD, parse_policy("{}"), authenticate_sender=False)
    assert out.verdict.result == "clean" and any("blocked senders" in n for n in out.verdict.detail["notes"])


def test_entries_are_normalised_and_checked() -> None:
    assert normalize("sender", " <Ann@Sender.TEST> ") == ("sender", "ann@sender.test")
    assert normalize("domain", "Sender.Test.") == ("domain", "sender.test")
    for kind, value in (("sender", "no-at-sign"), ("sender", "a b@x.test"), ("domain", "x"), ("domain", "a..b"),
                        ("sender", "a@b@c.test"), ("other", "x.test"), ("domain", "")):
        with pytest.raises(BlockError):
            normalize(kind, value)
