"""`mailmoat trace` finds a message by queue id, sender, recipient or Message-ID and prints its path."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from mailmoat_platform import redisclient
from mailmoat_platform.models import TraceEvent
from mailmoat_records.trace import TraceStore

pytestmark = pytest.mark.integration


def _trace(redis_url: str, needle: str, stdout: int = subprocess.PIPE) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MAILMOAT_REDIS_URL": redis_url, "MAILMOAT_RECORDS": "redis"}  # the trace in Redis
    return subprocess.run(
        [sys.executable, "-m", "mailmoat_cli.main", "trace", needle],
        env=env, stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=60,
    )


async def test_trace_lookup_by_every_key(redis_url: str) -> None:
    client = redisclient.from_url(redis_url)
    store = TraceStore(client, retention_days=90)
    assert await store.record(
        TraceEvent(event="RECEIVE", message_id="01QUEUEID", service="ingress", recipients=["a@example.com"],
                   detail="250 2.6.0 queued"),
        sender="S@Sender.org", recipients=["A@example.com"], message_id_header="<abc@sender.org>",
        client_ip="192.0.2.7",
    )
    await store.record(TraceEvent(event="DELIVER", message_id="01QUEUEID", service="egress",
                                  recipients=["a@example.com"], detail="250 ok"))
    ttl = await client.ttl("mailmoat:trace:01QUEUEID")
    assert 89 * 86400 < ttl <= 90 * 86400
    await client.aclose()

    for needle in ("01QUEUEID", "s@sender.org", "<a@example.com>", "<abc@sender.org>", "abc@sender.org",
                   "192.0.2.7"):
        result = _trace(redis_url, needle)
        assert result.returncode == 0, (needle, result.stderr)
        lines = result.stdout.splitlines()
        assert lines[0] == "message 01QUEUEID"
        assert "RECEIVE" in lines[1] and "DELIVER" in lines[2]

    missing = _trace(redis_url, "nobody@nowhere.example")
    assert missing.returncode == 1
    assert "no message found" in missing.stdout

    # Output into a pipe whose reader is gone (`mailmoat trace … | head`): no traceback.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        closed = _trace(redis_url, "01QUEUEID", stdout=write_end)
    finally:
        os.close(write_end)
    assert closed.returncode == 1 and closed.stderr == "", closed.stderr


def test_policy_check_command(tmp_path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("accepted_domains:\n  - domain: example.com\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("limits:\n  max_recipients: -3\n")
    ok = subprocess.run([sys.executable, "-m", "mailmoat_cli.main", "policy", "check", str(good)],
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "routing -> egress, routed at ingress" in ok.stdout
    hop = tmp_path / "hop.yaml"
    hop.write_text("accepted_domains:\n  - domain: example.com\npipeline:\n  filters: [antispam]\n")
    ok = subprocess.run([sys.executable, "-m", "mailmoat_cli.main", "policy", "check", str(hop)],
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and ok.stdout.rstrip().endswith("antispam -> routing -> egress)"), ok.stdout
    refused = subprocess.run([sys.executable, "-m", "mailmoat_cli.main", "policy", "check", str(bad)],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1
    assert f"{bad}: limits.max_recipients:" in refused.stderr
    assert "Traceback" not in refused.stderr
