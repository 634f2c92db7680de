"""Every input a fuzz target ever crashed on, and every target's seeds, replayed through the target."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from fuzz.run import target_names

REGRESSIONS = Path(__file__).resolve().parents[2] / "fuzz" / "regressions"


def _cases() -> list[tuple[str, Path]]:
    return [(name, path) for name in target_names()
            for path in sorted((REGRESSIONS / name).glob("*")) if path.is_file()]


def test_there_are_targets() -> None:
    assert target_names(), "fuzz/targets/ has no target"


@pytest.mark.parametrize("name", target_names())
def test_seeds_pass(name: str) -> None:
    target = importlib.import_module(f"fuzz.targets.{name}")
    seeds = target.seeds()
    assert seeds, f"{name} has no seeds"
    for seed in seeds:
        target.test_one_input(seed)


@pytest.mark.parametrize(("name", "path"), _cases(), ids=lambda v: v.name if isinstance(v, Path) else v)
def test_regression(name: str, path: Path) -> None:
    importlib.import_module(f"fuzz.targets.{name}").test_one_input(path.read_bytes())
