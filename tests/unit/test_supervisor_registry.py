"""``run all`` plans and retires stages by their kind in the registry, not by name."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from mailmoat_cli.supervisor import changes, listeners, plan, stage_queues
from mailmoat_platform import stages
from mailmoat_platform.settings import Settings
from mailmoat_policy import parse_policy
from tests.support.fakestages import with_stage


def _policy(*filters: str) -> SimpleNamespace:
    return SimpleNamespace(pipeline=SimpleNamespace(filters=list(filters)))


def test_a_new_filter_stage_is_planned_watched_and_retired(monkeypatch: pytest.MonkeyPatch) -> None:
    with_stage(monkeypatch, "sample_filter")
    keys = plan(parse_policy("pipeline: {filters: [sample_filter, antispam]}\n"), 1, False)
    assert keys == [("ingress", 0), ("sample_filter", 0), ("antispam", 0), ("routing", 0), ("egress", 0),
                    ("recorder", 0), ("console", 0)]
    assert "mailmoat.sample_filter" in stage_queues()
    running = [*keys]
    assert changes(plan(_policy("antispam"), 1, False), running, []).retire == [("sample_filter", 0)]  # type: ignore[arg-type]


def test_kinds_decide_the_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    with_stage(monkeypatch, "sample_dev", 9191, kind="dev")
    keys = plan(_policy(), 2, True)  # type: ignore[arg-type]
    assert keys == [("ingress", 0), ("ingress", 1), ("routing", 0), ("egress", 0), ("recorder", 0), ("console", 0),
                    ("devmailbox", 0), ("sample_dev", 0)]
    assert plan(_policy(), 1, False, "redis") == [("ingress", 0), ("routing", 0), ("egress", 0)]  # type: ignore[arg-type]
    # a dev stage is never retired by a policy change, nor is routing: only filter stages are
    assert changes([("ingress", 0)], [("ingress", 0), ("sample_dev", 0), ("routing", 0)], []).retire == []
    watched = set(stage_queues())
    assert {"mailmoat.antivirus", "mailmoat.antispam", "mailmoat.routing", "mailmoat.egress"} <= watched
    assert {f"mailmoat.{name}" for name in stages.filter_names()} <= watched
    assert not watched & {"mailmoat.ingress", "mailmoat.devmailbox", "mailmoat.sample_dev"}


def test_the_smtp_stage_listens_on_the_smtp_port() -> None:
    settings = Settings(smtp_host="127.0.0.1", smtp_port=2525, metrics_ports={})
    assert listeners(settings, [("ingress", 0), ("routing", 0)], None) == {
        ("127.0.0.1", 2525): "the SMTP port of ingress"}
