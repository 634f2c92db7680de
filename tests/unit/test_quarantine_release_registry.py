"""Who may release a quarantined message comes from the registry's release_by lists (through the
policy's default), not from names written into the quarantine."""

from __future__ import annotations

import pytest

from mailmoat_platform import stages
from mailmoat_policy import parse_policy
from mailmoat_records.quarantine import release_role
from tests.support.fakestages import with_stage


def test_the_default_rights_are_the_registrys() -> None:
    release_by = parse_policy("{}\n").quarantine.release_by
    assert release_by == {reason: "admin" for spec in stages.stages() for reason in spec.release_by}
    assert release_role(release_by, "malware") == "admin" and release_role(release_by, "spam") == "user"


def test_a_new_stages_reason_is_released_by_administrators(monkeypatch: pytest.MonkeyPatch) -> None:
    with_stage(monkeypatch, more='release_by = ["sample_leak"]')
    release_by = parse_policy("{}\n").quarantine.release_by
    assert release_role(release_by, "sample_leak") == "admin"
    assert release_role(release_by, "rule", "sample_leak") == "admin"  # the stage's result decides first
    # a policy that says otherwise wins
    assert release_role(parse_policy("quarantine: {release_by: {sample_leak: user}}\n").quarantine.release_by,
                        "sample_leak") == "user"
