"""``mailmoat check``: the decision chain run in-process on messages the tests build, offline."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from mailmoat_antispam.rules import GTUBE
from mailmoat_cli import check
from mailmoat_cli.main import main
from mailmoat_platform import stages

POLICY = """\
organization:
  name: Test
  hostname: gw.example.com
  internal_networks: [192.0.2.0/24]
accepted_domains:
  - {domain: example.com, type: authoritative, route: inside}
directory: [alice@example.com, bob@example.com]
routes:
  inside: {hosts: ["127.0.0.1:2526"], tls: opportunistic}
pipeline:
  filters: [connection_filter, antivirus, antispam, dlp]
"""

CLEAN = (b"From: Bob <bob@sender.example>\nTo: Alice <alice@example.com>\nSubject: lunch\n"
         b"Date: Sat, 05 Dec 2026 10:00:00 +0000\nMessage-ID: <1@sender.example>\n\nLunch tomorrow?\n")


def message(subject: str = "lunch", body: str = "Lunch tomorrow?", to: str = "alice@example.com") -> bytes:
    return (f"From: Bob <bob@sender.example>\r\nTo: {to}\r\nSubject: {subject}\r\n"
            f"Date: Sat, 05 Dec 2026 10:00:00 +0000\r\nMessage-ID: <2@sender.example>\r\n\r\n{body}\r\n").encode()


@pytest.fixture(autouse=True)
def _no_clamd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(check.CLAMD_ENV, raising=False)


@pytest.fixture
def policy(write_policy: Callable[..., Path]) -> Path:
    return write_policy(POLICY)


def run(tmp_path: Path, capsys: pytest.CaptureFixture[str], data: bytes, *args: str) -> tuple[int, dict, str]:
    path = tmp_path / "message.eml"
    path.write_bytes(data)
    status = main(["check", str(path), "--json", *args])
    out, err = capsys.readouterr()
    return status, (json.loads(out) if out else {}), err


def test_a_clean_message_is_delivered_to_its_route(tmp_path: Path, policy: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    status, report, err = run(tmp_path, capsys, CLEAN, "--policy", str(policy), "--client-ip", "203.0.113.9",
                              "--helo", "mx.sender.example")
    assert status == 0, err
    assert [s["stage"] for s in report["stages"]] == ["connection_filter", "antivirus", "antispam", "dlp"]
    assert [s["result"] for s in report["stages"]] == ["pass", "clean", "clean", "none"]
    headers = {s["stage"]: s["header"] for s in report["stages"]}
    assert headers["connection_filter"].startswith("X-Mailmoat-Connection-Report: CIP:203.0.113.9;")
    assert headers["antivirus"] == "X-Mailmoat-Malware-Report: result=clean\r\n"
    assert "X-Mailmoat-SCL: 0" in headers["antispam"]
    decision = report["decision"]
    assert decision["action"] == "deliver" and decision["cause"] == "none"
    assert [(r["route"], r["recipients"]) for r in decision["routes"]] == [("route:inside", ["alice@example.com"])]
    assert report["envelope"]["rcpt_to"] == ["alice@example.com"]  # from To
    assert report["envelope"]["mail_from"] == "bob@sender.example"  # from From
    assert "line ends made CRLF, as an SMTP client sends them" in report["notes"]


def test_the_text_output_names_every_verdict_what_did_not_run_and_the_action(
        tmp_path: Path, policy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "clean.eml"
    path.write_bytes(CLEAN)
    assert main(["check", str(path), "--policy", str(policy), "--rcpt", "bob@example.com"]) == 0
    out = capsys.readouterr().out
    for line in ("  connection_filter: pass", "  antivirus: clean", "  antispam: clean", "  dlp: none",
                 "    header: X-Mailmoat-Malware-Report: result=clean",
                 "    not run: sender authentication (SPF, DKIM, DMARC, ARC): offline, --dns runs it",
                 "    route route:inside: smarthost 127.0.0.1:2526, TLS opportunistic, for bob@example.com",
                 "result: deliver to route:inside (bob@example.com)"):
        assert line in out.splitlines(), (line, out)
    assert "clamd: not asked (" in out


@pytest.mark.parametrize(("actions", "action", "status"), [
    ("", "quarantine", 1),
    ("antispam: {actions: {hcspam: junk}}\n", "junk", 1),
    ("antispam: {actions: {hcspam: delete}}\n", "delete", 1),
])
def test_gtube_is_high_confidence_spam_and_takes_the_policys_action(
        tmp_path: Path, write_policy: Callable[..., Path], capsys: pytest.CaptureFixture[str],
        actions: str, action: str, status: int) -> None:
    policy = write_policy(POLICY + actions)
    got, report, err = run(tmp_path, capsys, message(body=GTUBE), "--policy", str(policy))
    assert got == status, err
    spam = next(s for s in report["stages"] if s["stage"] == "antispam")
    assert spam["result"] == "hcspam" and spam["detail"]["scl"] == 9 and "GTUBE" in spam["detail"]["rules"]
    assert "SFV:SPM" in spam["header"]
    decision = report["decision"]
    assert (decision["action"], decision["cause"], decision["stage"]) == (action, "hcspam", "antispam")
    assert bool(decision["routes"]) == (action == "junk")


def test_a_mail_flow_rule_rejects_by_subject_with_its_code(tmp_path: Path, write_policy: Callable[..., Path],
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    policy = write_policy(POLICY + """\
rules:
  - name: no-invoices
    conditions: {subject_contains: [overdue invoice]}
    actions:
      reject: {code: 5.7.901, text: Invoices go to the portal}
""")
    status, report, err = run(tmp_path, capsys, message(subject="Your OVERDUE invoice"), "--policy", str(policy))
    assert status == 2, err
    decision = report["decision"]
    assert decision["action"] == "reject" and decision["cause"] == "rule" and decision["result"] == "no-invoices"
    assert decision["reply"] == "550 5.7.901 Message rejected: Invoices go to the portal"
    assert decision["ndr"] == "bob@sender.example"
    assert decision["rules"] == ["rule 'no-invoices' (enforce) matched; took reject"]
    status, report, _ = run(tmp_path, capsys, message(subject="lunch"), "--policy", str(policy))
    assert status == 0 and report["decision"]["rules"] == []


def test_ingress_refusals_end_the_check_at_smtp(tmp_path: Path, write_policy: Callable[..., Path],
                                               capsys: pytest.CaptureFixture[str]) -> None:
    policy = write_policy(POLICY + "connection_filter: {ip_block: [203.0.113.0/24]}\n")
    status, report, _ = run(tmp_path, capsys, CLEAN, "--policy", str(policy), "--client-ip", "203.0.113.9")
    assert status == 2 and report["stages"] == []
    assert report["decision"]["stage"] == "ingress" and report["decision"]["reply"].startswith("550 5.7.513")
    status, report, _ = run(tmp_path, capsys, message(to="carol@elsewhere.example"), "--policy", str(policy))
    assert status == 2 and report["decision"]["reply"].startswith("550 5.7.")  # no open relay
    assert "carol@elsewhere.example" in report["notes"][-1]


@pytest.mark.parametrize(("data", "said"), [
    (b"", "the message is empty"),
    (b"\r\n\r\n  \n", "the message is empty"),
    (b"\x00\x01\x02 binary, no header", "not a message: it does not begin with a header field"),
    (b"Subject: nobody to send it to\r\n\r\nhi\r\n", "no recipient: the message has no To or Cc address"),
])
def test_broken_input_is_a_clear_error_with_status_3(tmp_path: Path, policy: Path, capsys: pytest.CaptureFixture[str],
                                                      data: bytes, said: str) -> None:
    status, report, err = run(tmp_path, capsys, data, "--policy", str(policy))
    assert status == 3 and report == {}
    assert err.startswith(f"mailmoat check: {said}") and "Traceback" not in err


def test_a_missing_file_or_a_bad_policy_is_status_3(tmp_path: Path, policy: Path, write_policy: Callable[..., Path],
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(tmp_path / "absent.eml"), "--policy", str(policy)]) == 3
    assert "absent.eml: cannot read: No such file or directory" in capsys.readouterr().err
    bad = write_policy("pipeline: {filters: [nonsense]}\n", name="bad.yaml")
    status, _, err = run(tmp_path, capsys, CLEAN, "--policy", str(bad))
    assert status == 3 and "pipeline.filters" in err


def test_the_check_runs_every_filter_stage_of_the_registry() -> None:
    assert set(check.RUNNERS) == set(stages.filter_names())


def udp_server() -> socket.socket:
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    server.setblocking(False)
    return server


def queries(server: socket.socket) -> int:
    count = 0
    while True:
        try:
            server.recvfrom(4096)
        except BlockingIOError:
            return count
        count += 1


def test_offline_asks_no_dns_and_dns_asks_the_policys_resolvers(tmp_path: Path, write_policy: Callable[..., Path],
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    server = udp_server()
    port = server.getsockname()[1]
    policy = write_policy(POLICY + f"""\
dns: {{nameservers: [127.0.0.1], port: {port}, timeout: 0.3}}
connection_filter: {{dnsbl: [{{zone: bl.test.example}}], timeout: 0.3}}
antispam: {{uribl: [{{zone: uribl.test.example}}]}}
""")
    with server:
        data = message(body="see https://shop.test.example/offer")
        status, report, err = run(tmp_path, capsys, data, "--policy", str(policy), "--client-ip", "203.0.113.9")
        assert status == 0, err
        assert queries(server) == 0
        not_run = {s["stage"]: s["not_run"] for s in report["stages"]}
        assert "DNS block lists (bl.test.example): offline, --dns asks them" in not_run["connection_filter"]
        assert "URI block lists (uribl.test.example): offline, --dns asks them" in not_run["antispam"]
        assert report["stages"][0]["detail"]["dnsbl"] == []
        status, report, err = run(tmp_path, capsys, data, "--policy", str(policy), "--client-ip", "203.0.113.9",
                                  "--dns")
        assert status == 0, err
        assert queries(server) > 0  # nobody answers: the look-ups are temporary errors, never a reason to refuse
        cf = report["stages"][0]
        assert cf["not_run"] == [] and cf["detail"]["dnsbl"][0]["result"] == "temperror"
        assert "sender authentication" not in " ".join(report["stages"][2]["not_run"])


def test_the_shared_corpus_runs_through_without_a_traceback(tmp_path: Path, policy: Path, corpus_dir: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """Each message from outside (ingress refuses those without one parseable From) and from one of the
    organisation's own servers (no From check: every filter stage sees every message)."""
    files = sorted(corpus_dir.rglob("*.eml")) if corpus_dir.is_dir() else []
    if not files:
        pytest.skip(f"no corpus at {corpus_dir}")
    for client in ("203.0.113.9", "192.0.2.10"):
        for path in files:
            status = main(["check", str(path), "--policy", str(policy), "--rcpt", "alice@example.com",
                           "--client-ip", client, "--json"])
            out, err = capsys.readouterr()
            assert "Traceback" not in err, (path, err)
            if status == 3:
                assert err.startswith("mailmoat check: "), (path, err)
                continue
            report = json.loads(out)
            assert report["exit_status"] == status, path
            if client == "192.0.2.10":
                assert len(report["stages"]) == 4, path


def test_a_reject_listing_is_refused_during_smtp_when_the_filter_runs_at_smtp(
        tmp_path: Path, write_policy: Callable[..., Path], capsys: pytest.CaptureFixture[str]) -> None:
    """``connection_filter.at_smtp``: ingress refuses a ``reject`` listing at the end of DATA, and the check
    says so (without it the message is accepted and routing rejects it with a non-delivery report)."""
    from tests.support.dnsserver import DnsServer

    with DnsServer("9.113.0.203.rbl.test.example. 60 IN A 127.0.0.2\n") as dns:
        text = POLICY + f"""\
dns: {{nameservers: [127.0.0.1], port: {dns.port}, timeout: 1}}
connection_filter: {{dnsbl: [{{zone: rbl.test.example, action: reject}}], at_smtp: {{at_smtp}}}}
"""
        for at_smtp, cause in (("true", "smtp"), ("false", "connection")):
            policy = write_policy(text.replace("{at_smtp}", at_smtp))
            status, report, err = run(tmp_path, capsys, CLEAN, "--policy", str(policy), "--client-ip",
                                      "203.0.113.9", "--rcpt", "alice@example.com", "--dns")
            assert status == 2, err
            assert report["stages"][0]["result"] == "reject" and report["decision"]["cause"] == cause
            if at_smtp == "true":
                assert report["decision"]["reply"] == ("554 5.7.1 Service unavailable, client host [203.0.113.9] "
                                                       "blocked using rbl.test.example")
                assert [s["stage"] for s in report["stages"]] == ["connection_filter"]
            else:  # accepted, then refused by routing with a non-delivery report to the sender
                assert report["decision"]["reply"].startswith("550 5.7.1 ")
                assert len(report["stages"]) == 4
