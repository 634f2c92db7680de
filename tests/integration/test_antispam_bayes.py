"""The classifier against real Redis: silent until enough mail was learned, then learning changes a
verdict; ``mailmoat train`` reads message files and mbox files and counts each message once; a cutoff
calibrated by ``mailmoat train calibrate`` is stored beside the counts and changes the verdict."""

from __future__ import annotations

import asyncio
import mailbox
from pathlib import Path

import pytest

from mailmoat_antispam.bayes import BayesStore, tokens
from mailmoat_antispam.calibrate import Calibration, CalibrationStore
from mailmoat_antispam.check import Checker
from mailmoat_antispam.content import parse
from mailmoat_antispam.train import calibrate_paths, learn_paths
from mailmoat_cli.main import main as cli_main
from mailmoat_platform import redisclient
from mailmoat_platform.models import Envelope
from mailmoat_policy import parse_policy

pytestmark = pytest.mark.integration

POLICY = parse_policy("antispam: {bayes: {min_spam: 3, min_ham: 3}}")
HEAD = "From: {who}@{dom}.test\r\nTo: bob@example.com\r\nSubject: {subj}\r\nDate: Mon, 2 Nov 2026 10:00:00 +0000\r\n" \
       "Message-ID: <{n}@{dom}.test>\r\n\r\n{body}\r\n"
SPAMMY = ["cheap replica watches discount pharmacy pills order now limited offer",
          "discount pills pharmacy no prescription order now cheap offer",
          "limited offer replica watches cheap pills pharmacy discount"]
HAMMY = ["the quarterly planning meeting moved to thursday please review the agenda",
         "minutes of the planning meeting attached please review before thursday",
         "agenda for thursday meeting quarterly review of the project plan"]


def message(n: int, subj: str, body: str, dom: str = "s") -> bytes:
    return HEAD.format(who=f"u{n}", dom=dom, subj=subj, n=n, body=body).encode()


async def verdict(checker: Checker, data: bytes):
    envelope = Envelope(client_ip="192.0.2.1", mail_from="x@s.test", rcpt_to=["bob@example.com"])
    return (await checker.check(envelope, data, POLICY, authenticate_sender=False)).verdict


async def test_learning_changes_the_verdict(redis_url: str) -> None:
    client = redisclient.from_url(redis_url)
    try:
        store = BayesStore(client, POLICY.antispam.bayes.key_prefix)
        checker = Checker(redis=client)
        probe = message(99, "cheap pills offer", "order cheap replica pills now, discount pharmacy offer")
        before = await verdict(checker, probe)
        assert before.result == "clean" and "bayes" not in before.detail
        for i, body in enumerate(SPAMMY[:2]):
            await store.learn(message(i, "offer", body), tokens(parse(message(i, "offer", body))), "spam")
        for i, body in enumerate(HAMMY):
            data = message(10 + i, "meeting", body, "corp")
            await store.learn(data, tokens(parse(data)), "ham")
        assert (await verdict(checker, probe)).result == "clean"  # 2 spam learned: not enough yet
        data = message(2, "offer", SPAMMY[2])
        assert await store.learn(data, tokens(parse(data)), "spam")
        assert not await store.learn(data, tokens(parse(data)), "spam")  # counted once
        assert await store.counts() == (3, 3)
        after = await verdict(checker, probe)
        assert after.detail["bayes"] > 0.9 and after.detail["scl"] >= 5 and after.result == "spam"
        assert any(r.startswith("BAYES_") for r in after.detail["rules"])
        ham_probe = message(98, "meeting", "please review the agenda for the planning meeting on thursday", "corp")
        assert (await verdict(checker, ham_probe)).result == "clean"
        # relearning the spam as ham moves it
        assert await store.learn(data, tokens(parse(data)), "ham")
        assert await store.counts() == (2, 4)
    finally:
        await client.aclose()


async def test_train_reads_files_and_mbox(redis_url: str, tmp_path: Path) -> None:
    box = mailbox.mbox(str(tmp_path / "spam.mbox"))
    for i, body in enumerate(SPAMMY):
        box.add(message(i, "offer", body))
    box.flush()
    box.close()
    (tmp_path / "one.eml").write_bytes(message(50, "meeting", HAMMY[0]).replace(b"\r\n", b"\n"))
    client = redisclient.from_url(redis_url)
    try:
        assert await learn_paths(client, "t:bayes", "spam", [tmp_path / "spam.mbox"]) == (3, 0)
        assert await learn_paths(client, "t:bayes", "spam", [tmp_path / "spam.mbox"]) == (0, 3)
        assert await learn_paths(client, "t:bayes", "ham", [tmp_path / "one.eml"]) == (1, 0)
        assert await BayesStore(client, "t:bayes").counts() == (3, 1)
    finally:
        await client.aclose()


def test_train_command(redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                       capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a.eml").write_bytes(message(1, "offer", SPAMMY[0]))
    (tmp_path / "policy.yaml").write_text("{}\n")
    monkeypatch.setenv("MAILMOAT_REDIS_URL", redis_url)
    monkeypatch.setenv("MAILMOAT_POLICY", str(tmp_path / "policy.yaml"))
    assert cli_main(["train", "spam", str(tmp_path / "a.eml")]) == 0
    assert "learned 1 as spam" in capsys.readouterr().out
    assert cli_main(["train", "ham", str(tmp_path / "missing.eml")]) == 2


async def test_bulk_loaded_counts_classify_as_the_in_memory_counts_of_make_accuracy(redis_url: str) -> None:
    """``make accuracy`` loads each fold's counts in bulk and chooses its nested cutoff with the same
    counts in memory: both must give the same probability for a message."""
    from mailmoat_antispam.calibrate import Counts

    counts = Counts()
    for i, body in enumerate(SPAMMY * 70):
        counts.add(tokens(parse(message(i, "offer", body))), True)
    for i, body in enumerate(HAMMY * 70):
        counts.add(tokens(parse(message(500 + i, "meeting", body, "corp"))), False)
    client = redisclient.from_url(redis_url)
    try:
        store = BayesStore(client, "mailmoat:test:bulk")
        await store.load_counts(counts.spam, counts.ham, counts.nspam, counts.nham, chunk=50)
        assert await store.counts() == (210, 210)
        for data in (message(900, "cheap offer", "discount pills now"), message(901, "agenda", "meeting thursday")):
            toks = tokens(parse(data))
            result = await store.classify(toks, 200, 200)
            assert result.probability is not None
            assert abs(result.probability - counts.probability(toks)) < 1e-12
    finally:
        await client.aclose()


async def test_a_stored_calibration_sets_the_cutoff_the_stage_uses(redis_url: str) -> None:
    client = redisclient.from_url(redis_url)
    prefix = POLICY.antispam.bayes.key_prefix
    try:
        store = BayesStore(client, prefix)
        for i, body in enumerate(SPAMMY):
            await store.learn(message(i, "offer", body), tokens(parse(message(i, "offer", body))), "spam")
        for i, body in enumerate(HAMMY):
            data = message(10 + i, "meeting", body, "corp")
            await store.learn(data, tokens(parse(data)), "ham")
        # half spam words, half ham words: a probability between the classes, under the default 0.90
        probe = message(97, "meeting offer", "cheap pills discount pharmacy agenda thursday planning meeting")
        checker = Checker(redis=client)
        before = await verdict(checker, probe)
        assert before.result == "clean" and 0.05 < before.detail["bayes"] < 0.9
        assert (await store.classify(tokens(parse(probe)), 3, 3)).cutoff is None
        calibrations = CalibrationStore(client, prefix)
        await calibrations.save(Calibration(round(before.detail["bayes"] - 0.01, 4), 0.3, 97.0, 0.3, 60, 900, 3))
        assert (await calibrations.load()).nham == 900
        after = await verdict(checker, probe)
        assert after.result == "spam" and "BAYES_SPAM" in after.detail["rules"]
        explicit = parse_policy("antispam: {bayes: {min_spam: 3, min_ham: 3, spam_cutoff: 0.9}}")
        envelope = Envelope(client_ip="192.0.2.1", mail_from="x@s.test", rcpt_to=["bob@example.com"])
        kept = (await checker.check(envelope, probe, explicit, authenticate_sender=False)).verdict
        assert kept.result == "clean"  # a cutoff the policy sets itself wins over the calibration
        assert await calibrations.clear() and await calibrations.load() is None
        assert (await verdict(checker, probe)).result == "clean"
    finally:
        await client.aclose()


def test_train_calibrate_command(redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    spam, ham = tmp_path / "spam", tmp_path / "ham"
    spam.mkdir()
    ham.mkdir()
    for i in range(60):
        (spam / f"{i}.eml").write_bytes(message(i, "offer", f"{SPAMMY[i % 3]} code{i}"))
        (ham / f"{i}.eml").write_bytes(message(100 + i, "meeting", f"{HAMMY[i % 3]} item{i}", "corp"))
    (tmp_path / "policy.yaml").write_text("antispam: {bayes: {key_prefix: 't:calibrate'}}\n")
    monkeypatch.setenv("MAILMOAT_REDIS_URL", redis_url)
    monkeypatch.setenv("MAILMOAT_POLICY", str(tmp_path / "policy.yaml"))
    assert cli_main(["train", "calibrate", "--spam", str(spam), "--ham", str(ham)]) == 0
    out = capsys.readouterr().out
    assert "spam cutoff" in out and "60 spam and 60 ham" in out and "catches 100.00 %" in out

    async def stored() -> Calibration | None:
        client = redisclient.from_url(redis_url)
        try:
            return await CalibrationStore(client, "t:calibrate").load()
        finally:
            await client.aclose()

    calibration = asyncio.run(stored())
    assert calibration is not None and calibration.nspam == 60 and calibration.ham_flagged == 0.0
    assert cli_main(["train", "calibrate", "--spam", str(spam / "0.eml"), "--ham", str(ham)]) == 2  # too little
    assert "needs 50 spam" in capsys.readouterr().out
    assert cli_main(["train", "calibrate", "--clear"]) == 0
    assert asyncio.run(stored()) is None
    assert cli_main(["train", "calibrate", "--spam", str(spam)]) == 2


async def test_calibration_counts_the_misjudged_a_second_time_and_a_later_run_takes_it_back(
        redis_url: str, tmp_path: Path) -> None:
    spam, ham = tmp_path / "spam", tmp_path / "ham"
    spam.mkdir()
    ham.mkdir()
    for i in range(60):
        (spam / f"{i}.eml").write_bytes(message(i, "offer", f"{SPAMMY[i % 3]} code{i}"))
        (ham / f"{i}.eml").write_bytes(message(100 + i, "meeting", f"{HAMMY[i % 3]} item{i}", "corp"))
    (ham / "odd.eml").write_bytes(message(999, "offer", f"{SPAMMY[0]} thursday"))  # ham that reads as spam
    client = redisclient.from_url(redis_url)
    prefix = "t:reinforce"
    try:
        assert await learn_paths(client, prefix, "spam", [spam]) == (60, 0)
        assert await learn_paths(client, prefix, "ham", [ham]) == (61, 0)
        store = BayesStore(client, prefix)
        before = await client.hgetall(f"{prefix}:ham")
        calibration, again = await calibrate_paths(client, prefix, [spam], [ham], reinforce=True)
        assert calibration.reinforced and again == 1
        assert await store.counts() == (60, 62)
        assert len(await client.hgetall(f"{prefix}:reinforced")) == 1
        after = await client.hgetall(f"{prefix}:ham")
        assert int(after[b"thursday"]) == int(before[b"thursday"]) + 1
        assert (await CalibrationStore(client, prefix).load()).reinforced
        # a second run counts it once more only once; a run without reinforcement takes the second count back
        assert (await calibrate_paths(client, prefix, [spam], [ham], reinforce=True))[1] == 1
        assert await store.counts() == (60, 62)
        calibration, again = await calibrate_paths(client, prefix, [spam], [ham], reinforce=False)
        assert not calibration.reinforced and again == 0
        assert await store.counts() == (60, 61) and not await client.hgetall(f"{prefix}:reinforced")
        assert await client.hgetall(f"{prefix}:ham") == before
    finally:
        keys = [k async for k in client.scan_iter(f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
