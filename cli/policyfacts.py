"""The policy as the supervisor of ``mailmoat run all`` sees it: the filter stages it plans from, read and
checked in a short-lived process of their own (``python -m mailmoat_cli.policyfacts PATH``).

Loading a policy takes pydantic and the model of every section, some 13 MB that a process keeps for its
life (bench/README.md, the memory table); the supervisor needs only ``pipeline.filters`` and whether the
policy is valid, which the child decides with the same ``load_policy`` as every service. A policy the
child refuses is refused by the supervisor with the child's words.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from mailmoat_platform.filestamp import FileChanges

log = logging.getLogger(__name__)

READ_TIMEOUT = 60.0
"""Seconds the child may take to load and check the policy."""


class PolicyRefused(Exception):
    """The policy file does not load (its message is the reason ``load_policy`` gave)."""


@dataclass(frozen=True)
class PipelineFacts:
    filters: tuple[str, ...]


@dataclass(frozen=True)
class PolicyFacts:
    """What ``mailmoat_cli.supervisor.plan`` reads of a valid policy: ``pipeline.filters``."""

    pipeline: PipelineFacts


def read(path: str | os.PathLike[str]) -> PolicyFacts:
    """The facts of the policy at ``path``, loaded and checked in a child process; ``PolicyRefused`` when it
    does not load."""
    try:
        # its own session: a Ctrl-C meant for the supervisor is not read as a policy the child refused
        done = subprocess.run([sys.executable, "-m", "mailmoat_cli.policyfacts", str(path)],
                              capture_output=True, text=True, timeout=READ_TIMEOUT, start_new_session=True)
    except subprocess.TimeoutExpired:
        raise PolicyRefused(f"{path}: reading the policy took longer than {READ_TIMEOUT:g} s") from None
    if done.returncode != 0:
        raise PolicyRefused(done.stderr.strip() or f"{path}: the policy reader exited with {done.returncode}")
    return PolicyFacts(pipeline=PipelineFacts(filters=tuple(json.loads(done.stdout)["filters"])))


class PolicyWatch:
    """The policy in force for the supervisor, read again when the file changes, as ``PolicyHolder`` does for
    a service: a new version that fails to load is refused (logged) and the last good one stays."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self.current = read(self.path)
        self._changes = FileChanges(self.path)

    def check(self) -> bool:
        """Read the policy again when the file changed; True when a new policy took effect."""
        if not self._changes.changed():
            return False
        try:
            self.current = read(self.path)
        except PolicyRefused as exc:
            log.error("policy refused, keeping the last good one: %s", exc)
            return False
        log.info("policy reloaded from %s", self.path)
        return True


def main(argv: list[str] | None = None) -> int:
    """Load and check one policy file; print its facts as JSON, or the reason it does not load (status 1)."""
    from mailmoat_policy import PolicyError, load_policy

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m mailmoat_cli.policyfacts POLICY_FILE", file=sys.stderr)
        return 2
    try:
        policy = load_policy(args[0])
    except PolicyError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(json.dumps({"filters": list(policy.pipeline.filters)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
