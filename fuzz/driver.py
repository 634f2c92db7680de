"""Run one fuzz target under atheris (libFuzzer): ``python -m fuzz.driver NAME [libFuzzer flags]``.

The target module ``fuzz.targets.NAME`` is imported with coverage instrumentation of the project's
packages, its ``seeds()`` are written to a scratch corpus, and libFuzzer takes it from there.
"""

from __future__ import annotations

import importlib
import sys
import tempfile
from pathlib import Path

import atheris

from mailmoat_platform import stages

LIBRARIES = ["mailmoat_platform", "mailmoat_mail", "mailmoat_policy", "mailmoat_records", "mailmoat_cli"]
PACKAGES = [*LIBRARIES, *(spec.package for spec in stages.stages()), "fuzz.targets"]
"""Instrumented for coverage: the libraries, the command, every stage of the registry, the targets."""


def main(argv: list[str]) -> None:
    name, flags = argv[1], argv[2:]
    with atheris.instrument_imports(include=PACKAGES):
        target = importlib.import_module(f"fuzz.targets.{name}")
    seeds_dir = Path(tempfile.mkdtemp(prefix=f"fuzz-{name}-seeds-"))
    for index, seed in enumerate(target.seeds()):
        (seeds_dir / f"seed-{index:04d}").write_bytes(seed)
    corpus = [flag for flag in flags if not flag.startswith("-")]
    options = [flag for flag in flags if flag.startswith("-")]
    atheris.Setup([argv[0], *options, *corpus, str(seeds_dir)], target.test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
