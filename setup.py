"""Packaging from the stage registry: pyproject.toml holds the metadata, this file the package list.

Every stage of ``libs/platform/stages.toml`` is package ``mailmoat_<name>`` at its ``path``, with the
subpackages found below it (folders with an ``__init__.py``), beside the libraries and the command.
Adding a stage to the registry adds it to the build; pyproject.toml needs no edit.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).resolve().parent
REGISTRY = ROOT / "libs" / "platform" / "stages.toml"
LIBRARIES = {
    "mailmoat_platform": "libs/platform",
    "mailmoat_mail": "libs/mail",
    "mailmoat_policy": "libs/policy",
    "mailmoat_records": "libs/records",
    "mailmoat_cli": "cli",
}


def package_dirs() -> dict[str, str]:
    """Top-level package -> its folder: the libraries, the command, then each registry stage."""
    dirs = dict(LIBRARIES)
    for stage in tomllib.loads(REGISTRY.read_text(encoding="utf-8")).get("stage", []):
        dirs[f"mailmoat_{stage['name']}"] = stage["path"]
    return dirs


def subpackages(package: str, folder: Path) -> list[str]:
    """``package`` and the packages below it: folders with an ``__init__.py`` reached through folders
    that have one too."""
    if not (folder / "__init__.py").is_file():
        raise SystemExit(f"setup.py: {folder} has no __init__.py, so {package} is not a package")
    found = [package]
    for child in sorted(p for p in folder.iterdir() if p.is_dir() and (p / "__init__.py").is_file()):
        found += subpackages(f"{package}.{child.name}", child)
    return found


def packages(dirs: dict[str, str]) -> list[str]:
    return [name for package, folder in dirs.items() for name in subpackages(package, ROOT / folder)]


if __name__ == "__main__":  # as setuptools runs it (importing it only reads the registry)
    DIRS = package_dirs()
    setup(package_dir=DIRS, packages=packages(DIRS))
