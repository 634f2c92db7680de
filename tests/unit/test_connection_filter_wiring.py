"""The connection filter in the process plan and the ingress greeting check (pure parts)."""

from __future__ import annotations

import inspect

from mailmoat_cli.main import plan_processes
from mailmoat_connection_filter import service
from mailmoat_ingress import replies
from mailmoat_ingress.checks import check_client
from mailmoat_platform.settings import Settings
from mailmoat_policy import parse_policy


def test_run_all_starts_the_stage_when_the_policy_lists_it(write_policy) -> None:
    path = write_policy("pipeline:\n  filters: [connection_filter]\n")
    plan = plan_processes(Settings(policy_path=str(path), ingress_workers=2), devmailbox=False)
    assert plan == [("ingress", 0), ("ingress", 1), ("connection_filter", 0), ("routing", 0), ("egress", 0),
                    ("recorder", 0), ("console", 0)]
    assert parse_policy(path.read_text()).pipeline.itinerary() == ["connection_filter", "routing", "egress"]
    assert inspect.iscoroutinefunction(service.main)
    assert list(inspect.signature(service.main).parameters) == ["settings", "worker"]


def test_block_list_refusal_at_greeting() -> None:
    policy = parse_policy("connection_filter:\n  ip_block: [192.0.2.0/24, '2001:db8::/32']\n  ip_allow: [192.0.2.7]\n")
    assert check_client(policy, "192.0.2.9") == (
        "550 5.7.513 Service unavailable, client host [192.0.2.9] blocked using the IP block list"
    )
    assert check_client(policy, "2001:db8::1") == replies.blocked_ip("2001:db8::1")
    assert check_client(policy, "::ffff:192.0.2.9") is not None
    assert check_client(policy, "192.0.2.7") is None  # the allow list takes precedence
    assert check_client(policy, "198.51.100.1") is None
    assert check_client(policy, "") is None
    assert check_client(parse_policy("{}"), "192.0.2.9") is None
