"""``mailmoat check`` with the services it may ask: the suite's real clamd (EICAR), Redis (the Bayes
classifier's counts), and the command run as its own process."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from mailmoat_antispam import bayes
from mailmoat_antispam.content import parse
from mailmoat_cli import check
from mailmoat_cli.main import main
from mailmoat_platform import redisclient
from tests.support.clamd import EICAR, ClamdServer, clamd_binary
from tests.support.infra import REDIS_TEST_URL
from tests.unit.test_check_cli import CLEAN, POLICY, message


@pytest.fixture(autouse=True)
def _no_clamd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(check.CLAMD_ENV, raising=False)


@pytest.fixture(scope="module")
def clamd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClamdServer]:
    if clamd_binary() is None:
        pytest.skip("clamd is not installed (scripts/setup.sh --test)")
    with ClamdServer(Path(tmp_path_factory.mktemp("clamd"))) as server:
        yield server


def with_eicar() -> bytes:
    return (b"From: Bob <bob@sender.example>\r\nTo: alice@example.com\r\nSubject: your invoice\r\n"
            b"Date: Sat, 05 Dec 2026 10:00:00 +0000\r\nMessage-ID: <3@sender.example>\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/mixed; boundary=b1\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\n"
            b"The invoice is attached.\r\n--b1\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Disposition: attachment; filename=invoice.txt\r\n\r\n" + EICAR + b"\r\n--b1--\r\n")


def command() -> list[str]:
    script = Path(sys.executable).with_name("mailmoat")
    return [str(script)] if script.exists() else [sys.executable, "-m", "mailmoat_cli.main"]


def test_eicar_scanned_by_clamd_is_malware_and_quarantined(tmp_path: Path, write_policy: Callable[..., Path],
                                                           clamd: ClamdServer,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    policy = write_policy(POLICY)
    path = tmp_path / "eicar.eml"
    path.write_bytes(with_eicar())
    status = main(["check", str(path), "--policy", str(policy), "--clamd", f"127.0.0.1:{clamd.port}", "--json"])
    out, err = capsys.readouterr()
    assert status == 1, err
    report = json.loads(out)
    av = next(s for s in report["stages"] if s["stage"] == "antivirus")
    assert av["result"] == "malware" and av["not_run"] == []
    assert av["detail"]["names"] == ["Eicar-Test-Signature.UNOFFICIAL"] and av["detail"]["scans"] >= 2
    assert av["header"].startswith("X-Mailmoat-Malware-Report: result=malware; names=Eicar-Test-Signature")
    decision = report["decision"]
    assert (decision["action"], decision["cause"], decision["stage"]) == ("quarantine", "malware", "antivirus")
    assert report["exit_status"] == 1
    # Without clamd the built-in checks alone find nothing: the message would be delivered, and the
    # output says clamd was not asked.
    assert main(["check", str(path), "--policy", str(policy), "--json"]) == 0
    av = next(s for s in json.loads(capsys.readouterr().out)["stages"] if s["stage"] == "antivirus")
    assert av["result"] == "clean" and av["not_run"][0].startswith("clamd: not asked")


def test_clamd_address_from_the_environment_and_clamd_away(tmp_path: Path, write_policy: Callable[..., Path],
                                                            clamd: ClamdServer, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    policy = write_policy(POLICY + "antimalware: {connect_timeout: 1}\n")
    path = tmp_path / "eicar.eml"
    path.write_bytes(with_eicar())
    monkeypatch.setenv(check.CLAMD_ENV, f"127.0.0.1:{clamd.port}")
    assert main(["check", str(path), "--policy", str(policy)]) == 1
    assert "result: quarantine: reason malware" in capsys.readouterr().out
    monkeypatch.setenv(check.CLAMD_ENV, "127.0.0.1:1")
    assert main(["check", str(path), "--policy", str(policy)]) == 3
    err = capsys.readouterr().err
    assert err.startswith("mailmoat check: clamd at 127.0.0.1:1 did not answer") and "Traceback" not in err


def test_as_a_process_reading_standard_input(tmp_path: Path, write_policy: Callable[..., Path],
                                             clamd: ClamdServer) -> None:
    policy = write_policy(POLICY)
    env = {**os.environ, "MAILMOAT_POLICY": str(policy)}
    env.pop(check.CLAMD_ENV, None)
    done = subprocess.run([*command(), "check", "-", "--json", "--mail-from", "", "--rcpt", "bob@example.com"],
                          input=CLEAN, capture_output=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["policy"] == str(policy) and report["envelope"]["mail_from"] == ""
    assert report["decision"]["routes"][0]["recipients"] == ["bob@example.com"]
    done = subprocess.run([*command(), "check", "-", "--clamd", f"127.0.0.1:{clamd.port}"], input=with_eicar(),
                          capture_output=True, env=env, timeout=120)
    assert done.returncode == 1, done.stderr
    assert b"  antivirus: malware" in done.stdout and b"result: quarantine: reason malware" in done.stdout
    done = subprocess.run([*command(), "check", "-"], input=b"", capture_output=True, env=env, timeout=120)
    assert done.returncode == 3 and done.stderr == b"mailmoat check: the message is empty\n" and done.stdout == b""


async def learn(prefix: str, spam: list[bytes], ham: list[bytes]) -> None:
    client = redisclient.from_url(REDIS_TEST_URL)
    store = bayes.BayesStore(client, prefix)
    try:
        for label, messages in (("spam", spam), ("ham", ham)):
            for data in messages:
                await store.learn(data, bayes.tokens(parse(data)), label)
    finally:
        await client.aclose()


def test_the_bayes_classifier_runs_only_with_redis(tmp_path: Path, write_policy: Callable[..., Path],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    prefix = f"mailmoat:test:check:{uuid.uuid4().hex}"
    policy = write_policy(POLICY + f"antispam: {{bayes: {{min_spam: 1, min_ham: 1, key_prefix: '{prefix}'}}}}\n")
    pitch = "cheap replica watches pills casino winnings claim your prize now"
    spam = [message(subject=f"offer {n}", body=f"{pitch} {n}") for n in range(5)]
    ham = [message(subject=f"minutes {n}", body=f"the project meeting minutes and the budget review {n}")
           for n in range(5)]
    asyncio.run(learn(prefix, spam, ham))
    try:
        path = tmp_path / "pitch.eml"
        path.write_bytes(message(subject="offer", body=pitch))
        main(["check", str(path), "--policy", str(policy), "--json"])
        spam_stage = next(s for s in json.loads(capsys.readouterr().out)["stages"] if s["stage"] == "antispam")
        assert "bayes" not in spam_stage["detail"]
        assert "Bayes classifier: its counts are in Redis, --redis URL reads them" in spam_stage["not_run"]
        main(["check", str(path), "--policy", str(policy), "--json", "--redis", REDIS_TEST_URL])
        spam_stage = next(s for s in json.loads(capsys.readouterr().out)["stages"] if s["stage"] == "antispam")
        assert spam_stage["detail"]["bayes"] > 0.9 and not any("Bayes" in n for n in spam_stage["not_run"])
        assert {"BAYES_99", "BAYES_SPAM"} & set(spam_stage["detail"]["rules"])
    finally:
        client = redis.Redis.from_url(REDIS_TEST_URL)
        keys = list(client.scan_iter(f"{prefix}:*"))
        if keys:
            client.delete(*keys)
        client.close()
