"""The external engines for real: Debian's SpamAssassin spamd and Rspamd, each started once for this module
on a loopback port, with no network (Rspamd's DNS goes to the loopback DNS server, spamd runs ``--local``).

GTUBE scores high in both and the Checker folds the engine's score (times ``weight``) into ours; a clean
message scores low; an engine that is down or stalled is skipped and the verdict still comes.
"""

from __future__ import annotations

import asyncio
import email.utils
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from mailmoat_antispam.check import Checker, Outcome
from mailmoat_antispam.engines import rspamd_check, rspamd_headers, spamd_check
from mailmoat_platform.models import Envelope
from mailmoat_policy import parse_policy
from tests.support.dnsserver import DnsServer
from tests.support.infra import free_port
from tests.support.rspamd import RspamdServer, rspamd_binary
from tests.support.spamd import SpamdServer, spamd_binary

pytestmark = pytest.mark.integration

GTUBE = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
# The sender's domain as a well-kept one publishes it: PTR and forward A of its mail host, MX, SPF, DMARC.
ZONE = """
1.2.0.192.in-addr.arpa. 60 IN PTR mail.sender.test.
mail.sender.test. 60 IN A 192.0.2.1
sender.test. 60 IN A 192.0.2.1
sender.test. 60 IN MX 10 mail.sender.test.
sender.test. 60 IN TXT "v=spf1 ip4:192.0.2.1 -all"
_dmarc.sender.test. 60 IN TXT "v=DMARC1; p=none"
"""


def message(body: bytes, to: str = "Bob <bob@example.com>") -> bytes:
    head = (f"Received: from mail.sender.test (mail.sender.test [192.0.2.1]) by mx.example.com with ESMTPS; "
            f"{email.utils.formatdate()}\r\n"
            f"From: Ann Smith <ann@sender.test>\r\nTo: {to}\r\nSubject: Minutes of Tuesday's meeting\r\n"
            f"Date: {email.utils.formatdate()}\r\nMessage-ID: {email.utils.make_msgid(domain='sender.test')}\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\n")
    return head.encode() + body


SPAM = message(b"This is the GTUBE test message.\r\n\r\n" + GTUBE + b"\r\n")
HAM = message(b"Hello Bob,\r\n\r\nthe minutes of Tuesday's meeting are below. We agreed to move the budget review\r\n"
              b"to the first week of next month and to ask the auditors for their draft by Friday.\r\n\r\n"
              b"Regards,\r\nAnn\r\n")


def envelope(*rcpts: str) -> Envelope:
    return Envelope(client_ip="192.0.2.1", helo="mail.sender.test", mail_from="ann@sender.test",
                    rcpt_to=list(rcpts or ["bob@example.com"]))


def policy(engines: str):
    return parse_policy(f"antispam: {{engines: {{{engines}}}}}\n")


async def check(data: bytes, engines: str, env: Envelope | None = None) -> Outcome:
    return await Checker().check(env or envelope(), data, policy(engines), authenticate_sender=False)


def engine_hit(outcome: Outcome, name: str) -> float:
    return next(h.score for h in outcome.findings.hits if h.name == name)


@pytest.fixture(scope="module")
def spamd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SpamdServer]:
    if spamd_binary() is None:
        pytest.skip("spamd is not installed (apt-get install spamd spamassassin; scripts/setup.sh --test)")
    with SpamdServer(Path(tmp_path_factory.mktemp("spamd"))) as server:
        yield server


@pytest.fixture(scope="module")
def dns() -> Iterator[DnsServer]:
    with DnsServer(ZONE) as server:
        yield server


@pytest.fixture(scope="module")
def rspamd(tmp_path_factory: pytest.TempPathFactory, dns: DnsServer) -> Iterator[RspamdServer]:
    if rspamd_binary() is None:
        pytest.skip("rspamd is not installed (apt-get install rspamd; scripts/setup.sh --test)")
    with RspamdServer(Path(tmp_path_factory.mktemp("rspamd")), dns_port=dns.port) as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def rspamd_answer(rspamd: RspamdServer, data: bytes, env: Envelope, http: aiohttp.ClientSession) -> dict:
    """Rspamd's whole ``/checkv2`` answer to the request ``rspamd_check`` makes."""
    async with http.post(rspamd.url + "/checkv2", data=data, headers=rspamd_headers(env)) as response:
        assert response.status == 200
        return await response.json(content_type=None)


# --- spamd -------------------------------------------------------------------------------------------------


async def test_spamd_gtube_scores_high_and_is_folded_in(spamd: SpamdServer) -> None:
    result = await spamd_check(spamd.address, SPAM, 20)
    assert result is not None and result.engine == "spamd"
    assert result.score >= 1000 and result.required == 5.0

    without = await check(SPAM, "")
    outcome = await check(SPAM, f"spamd: '{spamd.address}', weight: 0.5, timeout: 20")
    assert engine_hit(outcome, "SPAMD") == round(result.score * 0.5, 2)
    assert outcome.verdict.detail["score"] == pytest.approx(without.verdict.detail["score"] + result.score * 0.5)
    assert outcome.verdict.result == "hcspam" and "notes" not in outcome.verdict.detail


async def test_spamd_clean_message_scores_low(spamd: SpamdServer) -> None:
    result = await spamd_check(spamd.address, HAM, 20)
    assert result is not None and result.score < 2 and result.required == 5.0
    outcome = await check(HAM, f"spamd: '{spamd.address}', timeout: 20")
    assert engine_hit(outcome, "SPAMD") == round(result.score, 2)
    assert outcome.verdict.result == "clean" and outcome.verdict.detail["scl"] <= 1


async def test_spamd_answers_every_time(spamd: SpamdServer) -> None:
    """spamd writes its status line and its headers apart: the client reads to the end every time."""
    results = await asyncio.gather(*(spamd_check(spamd.address, SPAM, 20) for _ in range(30)))
    assert all(r is not None and r.score >= 1000 for r in results)


# --- Rspamd ------------------------------------------------------------------------------------------------


async def test_rspamd_gtube_is_reject_and_folded_in(rspamd: RspamdServer, http: aiohttp.ClientSession) -> None:
    answer = await rspamd_answer(rspamd, SPAM, envelope(), http)
    assert answer["action"] == "reject" and "GTUBE" in answer["symbols"]
    result = await rspamd_check(rspamd.url, envelope(), SPAM, 20, http)
    assert result is not None and result.engine == "rspamd"
    assert result.required == answer["required_score"] and result.score >= result.required

    without = await check(SPAM, "")
    outcome = await check(SPAM, f"rspamd_url: '{rspamd.url}', weight: 2, timeout: 20")
    assert engine_hit(outcome, "RSPAMD") == round(result.score * 2, 2)
    assert outcome.verdict.detail["score"] == pytest.approx(without.verdict.detail["score"] + result.score * 2)
    assert outcome.verdict.result == "hcspam"


async def test_rspamd_clean_message_scores_low(rspamd: RspamdServer, dns: DnsServer,
                                               http: aiohttp.ClientSession) -> None:
    answer = await rspamd_answer(rspamd, HAM, envelope(), http)
    assert answer["action"] == "no action", answer
    # the envelope reached Rspamd: it checked the client's PTR, the HELO name and the sender's SPF
    assert {"R_SPF_ALLOW", "TO_MATCH_ENVRCPT_ALL"} <= set(answer["symbols"]), answer["symbols"]
    assert ("1.2.0.192.in-addr.arpa.", "PTR") in dns.queries
    result = await rspamd_check(rspamd.url, envelope(), HAM, 20, http)
    assert result is not None and result.score < 6 and result.score == pytest.approx(answer["score"], abs=0.01)
    outcome = await check(HAM, f"rspamd_url: '{rspamd.url}', timeout: 20")
    assert engine_hit(outcome, "RSPAMD") == round(result.score, 2)
    assert outcome.verdict.result == "clean"


async def test_rspamd_is_told_every_recipient(rspamd: RspamdServer, http: aiohttp.ClientSession) -> None:
    two = message(b"Hello both.\r\n", to="Bob <bob@example.com>, Carol <carol@example.com>")
    answer = await rspamd_answer(rspamd, two, envelope("bob@example.com", "carol@example.com"), http)
    assert "TO_MATCH_ENVRCPT_ALL" in answer["symbols"], answer["symbols"]
    answer = await rspamd_answer(rspamd, two, envelope("bob@example.com"), http)
    assert "TO_MATCH_ENVRCPT_SOME" in answer["symbols"], answer["symbols"]


# --- engines down or stalled ------------------------------------------------------------------------------


async def test_engines_down_are_skipped() -> None:
    engines = f"rspamd_url: 'http://127.0.0.1:{free_port()}', spamd: '127.0.0.1:{free_port()}', timeout: 2"
    async with asyncio.timeout(30):  # a guard against a hang, not a measurement
        outcome = await check(SPAM, engines)
    assert outcome.verdict.result == "hcspam" and {"RSPAMD", "SPAMD"}.isdisjoint(outcome.verdict.detail["rules"])
    assert outcome.verdict.detail["notes"] == ["an external engine did not answer"] * 2


async def test_engines_stalled_are_skipped_after_the_timeout(spamd: SpamdServer, rspamd: RspamdServer) -> None:
    engines = f"rspamd_url: '{rspamd.url}', spamd: '{spamd.address}', timeout: 1"
    spamd.pause()
    rspamd.pause()
    try:
        async with asyncio.timeout(30):  # a guard against a hang, not a measurement
            outcome = await check(HAM, engines)
    finally:
        spamd.resume()
        rspamd.resume()
    assert outcome.verdict.result == "clean"
    assert outcome.verdict.detail["notes"] == ["an external engine did not answer"] * 2
    async with asyncio.timeout(60):  # both answer again once resumed
        outcome = await check(HAM, engines.replace("timeout: 1", "timeout: 20"))
    assert {"RSPAMD", "SPAMD"} <= set(outcome.verdict.detail["rules"])
