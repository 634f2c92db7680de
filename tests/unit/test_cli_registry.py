"""The ``mailmoat run`` choices are the registry's stages."""

from __future__ import annotations

import pytest

from mailmoat_cli import main as cli
from mailmoat_platform import stages
from tests.support.fakestages import with_stage


def test_services_are_the_registrys_stages() -> None:
    assert cli.SERVICES == stages.names()


def test_run_accepts_a_new_stage_and_refuses_an_unknown_one(monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as refused:
        cli.main(["run", "sample_filter"])
    assert refused.value.code == 2 and "invalid choice: 'sample_filter'" in capsys.readouterr().err
    with_stage(monkeypatch, "sample_filter")
    ran: list[tuple[str, int]] = []
    monkeypatch.setattr(cli, "run_one", lambda name, worker: ran.append((name, worker)) or 0)
    assert cli.main(["run", "sample_filter", "--worker", "1"]) == 0
    assert ran == [("sample_filter", 1)]


def test_a_declared_stage_that_is_not_installed_is_reported(monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    with_stage(monkeypatch, "sample_filter")
    monkeypatch.setattr("mailmoat_cli.supervisor.child_of_supervisor", lambda: True)
    assert cli.run_one("sample_filter", 0) == 2
    assert "no service named 'sample_filter' is installed" in capsys.readouterr().err
