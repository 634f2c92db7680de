"""Every Redis key prefix the code writes is in deploy/README.md's *Redis: what it holds*, which gives its
TTL or its bound: a new kind of key is documented (and its expiry thought about) with the code."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SOURCES = [REPO / "libs", REPO / "services", REPO / "cli"]
PREFIX = re.compile(r"""["']((?:mailmoat|console):[a-z_-]+)""")
NOT_DEPLOYED = {"mailmoat:accuracy": "make accuracy's own counts, deleted when it finishes"}


def prefixes() -> set[str]:
    found: set[str] = set()
    for root in SOURCES:
        for path in root.rglob("*.py"):
            if "tests" not in path.parts:
                found.update(PREFIX.findall(path.read_text(encoding="utf-8")))
    return found


def section() -> str:
    text = (REPO / "deploy" / "README.md").read_text()
    start = text.index("### Redis: what it holds")
    return text[start:text.index("\n### ", start + 1)]


def test_every_redis_key_prefix_is_documented_with_its_bound() -> None:
    found = prefixes()
    assert {"mailmoat:delivered", "mailmoat:grey", "mailmoat:rl", "mailmoat:bayes"} <= found  # the scan works
    documented = section()
    missing = sorted(p for p in found - set(NOT_DEPLOYED) if f"`{p}" not in documented)
    assert missing == [], f"Redis keys not in deploy/README.md (Redis: what it holds): {missing}"
