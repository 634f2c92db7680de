"""Settings take every stage's metrics port from the registry, and its override from the environment."""

from __future__ import annotations

import pytest

from mailmoat_platform import stages
from mailmoat_platform.settings import DEFAULT_METRICS_PORTS, Settings
from tests.support.fakestages import with_stage


def test_the_default_ports_are_the_registrys() -> None:
    assert DEFAULT_METRICS_PORTS == {s.name: s.metrics_port for s in stages.stages()}
    assert Settings().metrics_ports == DEFAULT_METRICS_PORTS
    assert Settings().metrics_port("antivirus", 2) == stages.get("antivirus").metrics_port + 2


def test_a_new_stage_has_its_port_and_its_override(monkeypatch: pytest.MonkeyPatch) -> None:
    with_stage(monkeypatch, "sample_filter", 9171)
    assert Settings().metrics_port("sample_filter") == 9171
    assert Settings.from_env().metrics_ports["sample_filter"] == 9171
    monkeypatch.setenv("MAILMOAT_SAMPLE_FILTER_METRICS_PORT", "19171")
    monkeypatch.setenv("MAILMOAT_ROUTING_METRICS_PORT", "0")
    ports = Settings.from_env().metrics_ports
    assert ports["sample_filter"] == 19171
    assert ports["routing"] == 0 and Settings.from_env().metrics_port("routing") == 0
    assert set(ports) == set(stages.names())


def test_the_records_are_in_postgresql_unless_told(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MAILMOAT_RECORDS", raising=False)
    assert Settings().records == "postgresql" and Settings.from_env().records == "postgresql"
    monkeypatch.setenv("MAILMOAT_RECORDS", "redis")
    assert Settings.from_env().records == "redis"
    monkeypatch.setenv("MAILMOAT_RECORDS", "mysql")
    with pytest.raises(ValueError, match="must be redis or postgresql"):
        Settings.from_env()
