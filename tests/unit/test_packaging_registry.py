"""The build's package list (setup.py) and the fuzz driver's instrumented packages follow the registry."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

from mailmoat_platform import stages

REPO = Path(__file__).resolve().parents[2]
SETUP = runpy.run_path(str(REPO / "setup.py"), run_name="setup")


def test_every_stage_is_a_package_at_its_path() -> None:
    dirs = SETUP["package_dirs"]()
    for spec in stages.stages():
        assert dirs[spec.package] == spec.path
    assert {"mailmoat_platform", "mailmoat_mail", "mailmoat_policy", "mailmoat_records", "mailmoat_cli"} <= set(dirs)


def test_subpackages_are_found_by_their_init_files() -> None:
    packages = SETUP["packages"](SETUP["package_dirs"]())
    for package, folder in SETUP["package_dirs"]().items():
        for init in (REPO / folder).rglob("__init__.py"):
            if "__pycache__" not in init.parts:
                assert ".".join((package, *init.parent.relative_to(REPO / folder).parts)) in packages
    assert "mailmoat_routing.rules" in packages and "mailmoat_antispam.auth" in packages


def test_a_stage_folder_without_init_is_refused(tmp_path: Path) -> None:
    (tmp_path / "sample").mkdir()
    with pytest.raises(SystemExit, match=r"no __init__\.py"):
        SETUP["subpackages"]("mailmoat_sample", tmp_path / "sample")


def test_the_fuzz_driver_instruments_every_stage() -> None:
    pytest.importorskip("atheris")
    from fuzz.driver import PACKAGES

    assert {spec.package for spec in stages.stages()} <= set(PACKAGES)
