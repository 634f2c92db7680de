"""The development mailbox as a process, started, killed and restarted through the test launcher
(tests/support/gateway.py) as end-to-end tests do with every service; and ``mailmoat run all``
delivering into it as ``make run`` does."""

from __future__ import annotations

import signal
import smtplib
import socket
import time
from pathlib import Path

import pytest

from tests.support.gateway import Gateway, free_ports

DUMMY_AMQP = "amqp://guest:guest@127.0.0.1:1/none"  # the mailbox does not use the bus
DUMMY_REDIS = "redis://127.0.0.1:1/15"


def send(port: int, rcpt: str, data: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.sendmail("s@example.org", [rcpt], data)


def files(root: Path, rcpt: str) -> list[Path]:
    box = root / rcpt / "new"
    return sorted(box.iterdir()) if box.exists() else []


def test_free_ports_are_distinct_blocks() -> None:
    bases = free_ports(8, block=3)
    ports = [b + i for b in bases for i in range(3)]
    assert len(set(ports)) == len(ports) == 24


def test_process_serves_health_delivers_and_survives_sigkill(tmp_path: Path) -> None:
    with Gateway(tmp_path, DUMMY_AMQP, DUMMY_REDIS, policy_text="{}\n") as gateway:
        gateway.start(("devmailbox",))
        assert gateway.ready("devmailbox")
        assert "python_info" in gateway.metrics("devmailbox")
        send(gateway.devmailbox_port, "alice@example.com", b"Subject: one\r\n\r\nfirst\r\n")
        (first,) = files(gateway.maildir, "alice@example.com")
        assert first.read_bytes().endswith(b"Subject: one\r\n\r\nfirst\r\n")

        assert gateway.kill("devmailbox") == -signal.SIGKILL
        assert not gateway.ready("devmailbox")
        with pytest.raises(OSError):
            send(gateway.devmailbox_port, "alice@example.com", b"Subject: lost\r\n\r\nx\r\n")
        gateway.start_service("devmailbox")
        send(gateway.devmailbox_port, "alice@example.com", b"Subject: two\r\n\r\nsecond\r\n")
        assert len(files(gateway.maildir, "alice@example.com")) == 2
        log = gateway.log_path("devmailbox").read_text()
        assert log.count("development mailbox on 127.0.0.1") == 2  # both runs wrote to the same log
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", gateway.devmailbox_port), timeout=2)
    assert gateway.procs == {}


def test_sigterm_is_a_clean_exit(tmp_path: Path) -> None:
    with Gateway(tmp_path, DUMMY_AMQP, DUMMY_REDIS) as gateway:
        gateway.start(("devmailbox",))
        assert gateway.kill("devmailbox", sig=signal.SIGTERM) == 0


def test_a_process_that_cannot_start_is_reported_with_its_log(tmp_path: Path) -> None:
    with Gateway(tmp_path, DUMMY_AMQP, DUMMY_REDIS, policy_text="limits:\n  max_recipients: 0\n") as gateway:
        with pytest.raises(AssertionError, match=r"(?s)exited with 2.*limits\.max_recipients"):
            gateway.start(("devmailbox",))


def test_run_all_delivers_into_the_devmailbox(tmp_path: Path, amqp_url: str, redis_url: str) -> None:
    """What ``make run`` starts: every service under the supervisor, mail for example.com in Maildir."""
    pytest.importorskip("mailmoat_ingress.service")
    pytest.importorskip("mailmoat_egress.service")
    gateway = Gateway(tmp_path, amqp_url, redis_url, ingress_workers=2)
    gateway.write_policy(f"""
        accepted_domains:
          - domain: example.com
            route: devmailbox
        routes:
          devmailbox:
            hosts: ["127.0.0.1:{gateway.devmailbox_port}"]
            tls: none
    """)
    with gateway:
        gateway.start_all(devmailbox=True)
        assert ("devmailbox", 0) in gateway._supervised and ("ingress", 1) in gateway._supervised
        data = b"Subject: through the gateway\r\nMessage-ID: <run-all@example.org>\r\n\r\nhello\r\n"
        with smtplib.SMTP("127.0.0.1", gateway.smtp_port, timeout=30) as client:
            client.sendmail("you@example.org", ["alice@example.com"], data)
        deadline = time.monotonic() + 60
        while not files(gateway.maildir, "alice@example.com") and time.monotonic() < deadline:
            time.sleep(0.1)
        (delivered,) = files(gateway.maildir, "alice@example.com")
        assert delivered.read_bytes().endswith(data)
        assert gateway.kill("all", sig=signal.SIGTERM) == 0
