"""run all starts the recorder (and the console) when the records are in PostgreSQL, the default, and only then."""

from __future__ import annotations

from types import SimpleNamespace

from mailmoat_cli.supervisor import plan
from mailmoat_platform import stages


def test_the_recorder_runs_with_records_in_postgresql_only() -> None:
    policy = SimpleNamespace(pipeline=SimpleNamespace(filters=[]))
    assert stages.get("recorder").kind == "recorder"
    assert plan(policy, 1, False)[3:] == [("recorder", 0), ("console", 0)]  # type: ignore[arg-type]
    assert ("recorder", 0) not in plan(policy, 1, False, "redis")  # type: ignore[arg-type]
    planned = plan(policy, 1, False, "postgresql")  # type: ignore[arg-type]
    assert planned[:4] == [("ingress", 0), ("routing", 0), ("egress", 0), ("recorder", 0)]
