"""Policy loading: any file content is either a policy or a ``PolicyError`` naming what is wrong."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from mailmoat_policy import PolicyError, load_policy

REPO = Path(__file__).resolve().parents[2]
_FILE = Path(tempfile.gettempdir()) / f"mailmoat-fuzz-policy-{os.getpid()}.yaml"


def test_one_input(data: bytes) -> None:
    _FILE.write_bytes(data)
    try:
        policy = load_policy(_FILE)
    except PolicyError as exc:
        assert str(exc).startswith(str(_FILE)), f"a refusal must name the file: {exc}"
        return
    # What services ask of a loaded policy must work on any policy that loaded.
    policy.pipeline.itinerary()
    policy.is_internal("192.0.2.1")
    policy.is_internal("2001:db8::1")


def seeds() -> list[bytes]:
    files = [REPO / "config" / "policy.example.yaml", REPO / "bench" / "policy.yaml",
             *sorted((REPO / "deploy").rglob("policy*.yaml"))]
    found = [path.read_bytes() for path in files if path.is_file()]
    return [*found, b"", b"{}", b"accepted_domains: [{domain: example.com}]\n", b"- a\n- b\n"]
