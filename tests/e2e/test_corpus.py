"""Hostile and real-world MIME through the whole pipeline with every filter stage on (connection filter,
antivirus with a real clamd, antispam): no crash, no dead letter, no loss. Every message ends
delivered byte-identical below the headers the gateway prepends, quarantined, or refused during SMTP
with a 5xx reply, and the outcomes are counted.

The generated corpus (``tests/support/hostile.py``) always runs, and each of its messages must end as
its case says. The vendored third-party corpora (``tests/support/corpora.py``: CPython's, Mime4j's and flanker's
test messages) always run too; the one in ``../shared/corpus/mime`` runs when it is there (never required: a fresh
clone has no ``../shared``).
"""

from __future__ import annotations

import re
import socket
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mailmoat_mail.author import read_author
from tests.e2e.conftest import POLICY
from tests.support import records
from tests.support.clamd import ClamdServer
from tests.support.corpora import as_submitted, label, shared, vendored
from tests.support.dnsserver import DnsServer
from tests.support.gateway import Gateway
from tests.support.hostile import cases
from tests.support.sink import SmtpSink

pytestmark = pytest.mark.e2e

SERVICES = ("ingress", "connection_filter", "antivirus", "antispam", "routing", "egress")
FILTERS = """
dns:
  nameservers: [127.0.0.1]
  port: {dns_port}
  timeout: 1
pipeline:
  filters: [connection_filter, antivirus, antispam]
"""
AT_SMTP = """
connection_filter:
  at_smtp: true
"""
ENDINGS = {"DELIVER": "deliver", "QUARANTINE": "quarantine"}
"""Trace events that end a message well, and what they count as; any other end is a failure."""
PREPENDED = re.compile(rb"\A(?:(?:X-Mailmoat-[A-Za-z-]+|Received|Authentication-Results):[^\r\n]*\r\n"
                       rb"(?:[ \t][^\r\n]*\r\n)*)+")
"""The header block the gateway puts before the original bytes."""
AUTHOR = b"From: Corpus Sender <corpus@sender.example.org>\r\n"
"""Put before a third-party message without a From field, which ingress refuses (5.7.512)."""


@dataclass
class Sent:
    name: str
    data: bytes
    expect: str | None
    """What the case says must happen (None: anything but loss, for third-party mail)."""
    outcome: str = ""
    detail: str = ""
    queue_id: str = ""


@pytest.fixture(scope="module")
def clamd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClamdServer]:
    with ClamdServer(Path(tmp_path_factory.mktemp("clamd-corpus"))) as server:
        yield server


@pytest.fixture(scope="module")
def dns() -> Iterator[DnsServer]:
    with DnsServer("") as server:  # every name unknown: the checks run and find nothing, quickly
        yield server


def corpus_files(corpus_dir: Path) -> list[Path]:
    if not corpus_dir.is_dir():
        pytest.skip(f"third-party corpus not present at {corpus_dir} (optional; the generated hostile corpus "
                    "runs in test_hostile_corpus_through_every_stage)")
    files = shared(corpus_dir)
    assert len(files) >= 50, f"corpus incomplete under {corpus_dir}: {len(files)} files"
    return files


def raw_smtp(port: int, sender: str, rcpt: str, content: bytes) -> tuple[int, str]:
    """A minimal client that sends the content exactly as given (only dot-stuffed), bare LFs and all."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        stream = sock.makefile("rb")

        def reply() -> tuple[int, str]:
            lines = []
            while True:
                line = stream.readline()
                assert line, "connection closed"
                lines.append(line.decode(errors="replace").rstrip())
                if line[3:4] != b"-":
                    return int(line[:3]), lines[-1][4:]

        assert reply()[0] == 220
        for command in (b"EHLO corpus.test", f"MAIL FROM:<{sender}>".encode(), f"RCPT TO:<{rcpt}>".encode(), b"DATA"):
            sock.sendall(command + b"\r\n")
            code, text = reply()
            if code >= 400:
                return code, text
        stuffed = re.sub(rb"(?m)^\.", b"..", content)
        if not stuffed.endswith(b"\r\n"):
            stuffed += b"\r\n"
        sock.sendall(stuffed + b".\r\n")
        result = reply()
        sock.sendall(b"QUIT\r\n")
        return result


ENDING_EVENTS = ("DELIVER", "QUARANTINE", "DEADLETTER", "REJECT", "DSN", "DELETE", "FAIL")


def run_corpus(port: int, sink: SmtpSink, messages: list[Sent], timeout: float = 240) -> Counter[str]:
    """Send every message, follow each accepted one to its end, check delivered bytes; the outcome counts."""
    by_rcpt: dict[str, Sent] = {}
    for index, item in enumerate(messages):
        rcpt = f"corpus{index}@example.com"
        code, text = raw_smtp(port, "corpus@sender.example.org", rcpt, item.data)
        if code == 250:
            item.queue_id = text.split()[1]
            by_rcpt[rcpt] = item
        else:
            assert 500 <= code < 600 and re.match(r"5\.\d+\.\d+ \S", text), (item.name, code, text)
            item.outcome, item.detail = "refuse", f"{code} {text}"
    deadline = time.monotonic() + timeout
    pending = dict(by_rcpt)
    while pending and time.monotonic() < deadline:
        ended = records.first_of([item.queue_id for item in pending.values()], ENDING_EVENTS)
        for rcpt, item in list(pending.items()):
            if item.queue_id in ended:
                first = ended[item.queue_id]
                item.outcome = ENDINGS.get(first["event"], first["event"])
                item.detail = first["detail"]
                del pending[rcpt]
        time.sleep(0.2)
    assert not pending, f"no end within {timeout}s (lost?): {[i.name for i in pending.values()]}"
    delivered = {rcpt for rcpt, item in by_rcpt.items() if item.outcome == "deliver"}
    time.sleep(0.5)  # nothing more may arrive
    got = {tuple(m.rcpt_tos): m.data for m in sink.messages}
    assert sorted(r for (r,) in got) == sorted(delivered), "the sink got other messages than traced DELIVER"
    for rcpt in delivered:
        item, data = by_rcpt[rcpt], got[(rcpt,)]
        sent = item.data if item.data.endswith(b"\r\n") else item.data + b"\r\n"
        # The original bytes after a header block of ours (a message may open with Received fields of its own).
        ours = data[: len(data) - len(sent)]
        assert data.endswith(sent) and PREPENDED.fullmatch(ours), f"{item.name}: bytes changed"
    return Counter(item.outcome for item in messages)


def report(title: str, messages: list[Sent], counts: Counter[str]) -> None:
    print(f"\n{title}: {len(messages)} messages: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    for item in messages:
        print(f"  {item.outcome:10} {item.name}: {item.detail[:160]}")


def gateway_with_every_stage(gateway_factory, dns: DnsServer, clamd: ClamdServer):
    return gateway_factory(textwrap.dedent(POLICY) + textwrap.dedent(FILTERS), services=SERVICES,
                           env={"MAILMOAT_CLAMD_ADDRESS": clamd.address}, dns_port=dns.port)


@pytest.fixture
def colocated_at_smtp(tmp_path: Path, amqp_url: str, redis_url: str, sink: SmtpSink, dns: DnsServer,
                      clamd: ClamdServer) -> Iterator[Gateway]:
    """``mailmoat run all`` with the filter stages and routing in one process (decision 012) and the
    connection filter run by ingress at SMTP time (decision 013): the other shape the same mail must pass."""
    text = (textwrap.dedent(POLICY) + textwrap.dedent(FILTERS) + AT_SMTP).format(
        sink_port=sink.port, max_size=1_000_000, dns_port=dns.port)
    with Gateway(tmp_path / "colocated", amqp_url, redis_url, policy_text=text,
                 extra_env={"MAILMOAT_TOPOLOGY": "colocated", "MAILMOAT_CLAMD_ADDRESS": clamd.address}) as gateway:
        gateway.start_all()
        yield gateway


def hostile_corpus(port: int, sink: SmtpSink, shape: str) -> list[Sent]:
    messages = [Sent(case.name, case.data, case.expect) for case in cases()]
    counts = run_corpus(port, sink, messages)
    report(f"hostile corpus, {shape}", messages, counts)
    wrong = [(m.name, m.expect, m.outcome, m.detail[:200]) for m in messages if m.outcome != m.expect]
    assert not wrong, wrong
    assert set(counts) <= {"deliver", "quarantine", "refuse"} and sum(counts.values()) == len(messages)
    return messages


def third_party_corpus(port: int, sink: SmtpSink, files: list[Path], shape: str) -> None:
    messages = []
    for path in files:
        raw = path.read_bytes()
        name = label(path)
        submitted = as_submitted(raw)
        messages += [Sent(f"{name} (submitted)", submitted, None), Sent(f"{name} (raw)", raw, None)]
        if read_author(submitted).fields == 0:  # refused at SMTP as it is: with an author, it reaches the stages
            messages.append(Sent(f"{name} (with a From)", AUTHOR + submitted, None))
    counts = run_corpus(port, sink, messages)
    report(f"third-party corpus, {shape}", messages, counts)
    assert set(counts) <= {"deliver", "quarantine", "refuse"}, counts
    for item in messages:  # CRLF as an MTA sends it: refused only for its line length or size, or its author
        if not item.name.endswith("(raw)") and item.outcome == "refuse":
            author_refused = "5.7.512" in item.detail and read_author(item.data).problem is not None
            assert "5.3.4" in item.detail or "5.6.0" in item.detail or author_refused, (item.name, item.detail)


def test_hostile_corpus_through_every_stage(gateway_factory, sink: SmtpSink, dns: DnsServer,
                                            clamd: ClamdServer) -> None:
    hostile_corpus(gateway_with_every_stage(gateway_factory, dns, clamd).smtp_port, sink, "a process per stage")


def test_third_party_corpus_through_every_stage(gateway_factory, sink: SmtpSink, dns: DnsServer,
                                                clamd: ClamdServer, corpus_dir: Path) -> None:
    files = corpus_files(corpus_dir)
    gateway = gateway_with_every_stage(gateway_factory, dns, clamd)
    third_party_corpus(gateway.smtp_port, sink, files, "a process per stage")


def test_vendored_corpora_through_every_stage(gateway_factory, sink: SmtpSink, dns: DnsServer,
                                             clamd: ClamdServer) -> None:
    files = vendored()
    assert len(files) >= 120, [label(p) for p in files]
    gateway = gateway_with_every_stage(gateway_factory, dns, clamd)
    third_party_corpus(gateway.smtp_port, sink, files, "a process per stage")


def test_hostile_corpus_colocated_with_the_connection_filter_at_smtp(colocated_at_smtp: Gateway,
                                                                     sink: SmtpSink) -> None:
    messages = hostile_corpus(colocated_at_smtp.smtp_port, sink, "colocated, connection filter at SMTP")
    delivered = next(m for m in messages if m.outcome == "deliver")
    services = {(e["service"], e["detail"].split(":")[0]) for e in records.events(delivered.queue_id)}
    assert ("ingress", "connection filter") in services  # judged at SMTP time, not by the stage
    assert not any(service == "connection_filter" for service, _ in services)


def test_third_party_corpus_colocated_with_the_connection_filter_at_smtp(corpus_dir: Path, sink: SmtpSink,
                                                                         request: pytest.FixtureRequest) -> None:
    files = corpus_files(corpus_dir)  # skips before the gateway starts when the corpus is absent
    gateway = request.getfixturevalue("colocated_at_smtp")
    third_party_corpus(gateway.smtp_port, sink, files, "colocated, connection filter at SMTP")


def test_vendored_corpora_colocated_with_the_connection_filter_at_smtp(colocated_at_smtp: Gateway,
                                                                       sink: SmtpSink) -> None:
    third_party_corpus(colocated_at_smtp.smtp_port, sink, vendored(), "colocated, connection filter at SMTP")
