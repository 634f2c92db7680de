"""The supervisor's view of the policy, read in a child process: the filter stages, refusals as a service
refuses them, the last good policy kept."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mailmoat_cli.policyfacts import PolicyRefused, PolicyWatch, read
from mailmoat_cli.supervisor import plan, run_all
from mailmoat_policy import PolicyError, load_policy

GOOD = "pipeline:\n  filters: [connection_filter, antispam]\n"
BAD = "pipeline:\n  filters: [no_such_stage]\n"


def test_the_facts_are_the_policys_filter_stages(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(GOOD)
    facts = read(path)
    assert facts.pipeline.filters == ("connection_filter", "antispam")
    assert plan(facts, 1, False) == plan(load_policy(path), 1, False)


def test_a_policy_that_does_not_load_is_refused_with_the_loaders_words(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(BAD)
    with pytest.raises(PolicyError) as loaded:
        load_policy(path)
    with pytest.raises(PolicyRefused) as refused:
        read(path)
    assert str(refused.value) == str(loaded.value)
    with pytest.raises(PolicyRefused, match="cannot read"):
        read(tmp_path / "missing.yaml")


def test_a_change_takes_effect_and_a_bad_one_keeps_the_last_good_policy(tmp_path: Path,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("{}\n")
    watch = PolicyWatch(path)
    assert not watch.check()  # unchanged
    path.write_text(GOOD)
    os.utime(path, (1, 1))
    assert watch.check() and watch.current.pipeline.filters == ("connection_filter", "antispam")
    path.write_text(BAD)
    assert not watch.check()
    assert watch.current.pipeline.filters == ("connection_filter", "antispam")
    assert "policy refused, keeping the last good one" in caplog.text and "no_such_stage" in caplog.text


def test_run_all_refuses_a_bad_policy_before_starting_anything(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(BAD)
    monkeypatch.setenv("MAILMOAT_POLICY", str(path))
    assert run_all(False) == 2
    err = capsys.readouterr().err
    assert err.startswith("mailmoat: policy refused:\n") and "no_such_stage" in err
