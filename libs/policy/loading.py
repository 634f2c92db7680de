"""Loading the policy: YAML to a validated ``Policy``, errors that name file, field and reason, hot reload."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path

import yaml
from pydantic import ValidationError

from mailmoat_platform.filestamp import FileChanges
from mailmoat_policy.model import Policy

log = logging.getLogger(__name__)


class PolicyError(Exception):
    """A policy file that cannot be used; the message names the file, the field path and the reason."""


def parse_policy(text: str, source: str = "<policy>") -> Policy:
    try:
        data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # C loader: large lists
    except yaml.YAMLError as exc:
        raise PolicyError(f"{source}: not valid YAML: {exc}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise PolicyError(f"{source}: the top level must be a mapping, not {type(data).__name__}")
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            path = ".".join(str(p) for p in error["loc"]) or "(top level)"
            lines.append(f"{source}: {path}: {error['msg']}")
        raise PolicyError("\n".join(lines)) from exc


def load_policy(path: str | os.PathLike[str]) -> Policy:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise PolicyError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason})") from exc
    return parse_policy(text, str(path))


class PolicyHolder:
    """The policy in force for a service, reloaded when the file changes.

    A new version that fails to load is refused (logged, counted) and the last good one stays.
    """

    def __init__(self, path: str | os.PathLike[str], on_change: Callable[[Policy], None] | None = None):
        self.path = Path(path)
        self.current = load_policy(self.path)
        self._changes = FileChanges(self.path)
        self._on_change = on_change
        self.reloads = 0
        self.refused = 0
        self.last_error: str | None = None

    def check(self) -> bool:
        """Reload when the file changed; True when a new policy took effect."""
        if not self._changes.changed():
            return False
        try:
            policy = load_policy(self.path)
        except PolicyError as exc:
            self.refused += 1
            self.last_error = str(exc)
            log.error("policy refused, keeping the last good one: %s", exc)
            return False
        self.current = policy
        self.reloads += 1
        self.last_error = None
        log.info("policy reloaded from %s", self.path)
        if self._on_change is not None:
            self._on_change(policy)
        return True

    async def watch(self, interval: float = 1.0) -> None:
        """Poll the file forever (run as a task)."""
        while True:
            await asyncio.sleep(interval)
            self.check()
