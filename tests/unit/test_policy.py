"""Policy loading: validation errors name file, field path and reason; hot reload keeps the last good."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from mailmoat_policy import PolicyError, PolicyHolder, load_policy, parse_policy

GOOD = """
organization:
  hostname: gw.example.com
  internal_networks: [10.1.0.0/16, "2001:db8::/32"]
accepted_domains:
  - domain: Example.COM
    dbeb: true
    route: onprem
directory: [Alice@example.com]
routes:
  onprem:
    hosts: ["10.0.0.5:25", "10.0.0.6"]
    tls: verify
"""


def test_example_policy_in_repo_is_valid() -> None:
    policy = load_policy(Path(__file__).resolve().parents[2] / "config" / "policy.example.yaml")
    assert policy.accepted_domain("example.com") is not None
    assert policy.pipeline.itinerary()[-2:] == ["routing", "egress"]


def test_good_policy_lookups() -> None:
    policy = parse_policy(GOOD)
    assert policy.accepted_domain("EXAMPLE.com.").domain == "example.com"
    assert policy.accepted_domain("example.org") is None
    assert policy.in_directory("alice@EXAMPLE.com")
    assert not policy.in_directory("mallory@example.com")
    assert policy.is_internal("10.1.200.3")
    assert policy.is_internal("2001:db8::1")
    assert not policy.is_internal("10.2.0.1")
    assert not policy.is_internal("not-an-ip")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("limits:\n  max_recipients: 0\n", "limits.max_recipients"),
        ("routes:\n  x:\n    hosts: [a]\n    tls: sometimes\n", "routes.x.tls"),
        ("accepted_domains:\n  - domain: a.com\n    route: missing\n", "no route named 'missing'"),
        ("organization:\n  internal_networks: [300.1.1.0/24]\n", "organization.internal_networks"),
        ("limits:\n  max_recipient: 10\n", "limits.max_recipient"),
        ("pipeline:\n  filters: [antivirus, nosuchstage]\n", "unknown filter stage 'nosuchstage'"),
        ("directory: [nobody]\n", "not an address"),
        ("limits:\n  max_line_length: 4096\n", "limits.max_line_length: Value error, at most 998 octets"),
        ("limits:\n  max_line_length: 999\n", "006-line-length.md"),
        ("- just\n- a list\n", "top level must be a mapping"),
        ("a: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_policy_names_file_path_and_reason(text: str, expected: str) -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy(text, "/etc/mailmoat/policy.yaml")
    message = str(info.value)
    assert message.startswith("/etc/mailmoat/policy.yaml: ")
    assert expected in message


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(tmp_path / "nope.yaml")


def _rewrite(path: Path, text: str) -> None:
    path.write_text(text)
    stamp = time.time() + 5  # a distinct mtime even on coarse file systems
    os.utime(path, (stamp, stamp))


def test_hot_reload_takes_good_and_refuses_bad(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(GOOD)
    changes = []
    holder = PolicyHolder(path, on_change=changes.append)
    assert holder.check() is False  # unchanged

    _rewrite(path, GOOD + "  - domain: example.net\n")  # invalid: list item under routes mapping
    assert holder.check() is False
    assert holder.refused == 1
    assert holder.current.accepted_domain("example.com") is not None
    assert "policy.yaml" in (holder.last_error or "")

    _rewrite(path, GOOD.replace("accepted_domains:\n", "accepted_domains:\n  - domain: example.net\n"))
    assert holder.check() is True
    assert holder.current.accepted_domain("example.net") is not None
    assert len(changes) == 1
    assert holder.last_error is None
