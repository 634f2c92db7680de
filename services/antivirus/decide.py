"""The antivirus stage's decisions (pure): what to hand the engine, and the verdict from what was found.

``analyse`` runs the built-in checks (MIME walk, common attachment filter by name and true type,
archives within limits) and lists what the engine should scan; ``decide`` combines the engine's
results with those findings into the stage's Verdict; ``report_header`` renders it as the
``X-Mailmoat-Malware-Report`` header line that is prepended to the message.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from mailmoat_antivirus import archives, mime
from mailmoat_antivirus.clamd import ScanResult
from mailmoat_common import filetypes
from mailmoat_common.models import Verdict
from mailmoat_common.policy import Antimalware

STAGE = "antivirus"
HEADER = b"X-Mailmoat-Malware-Report"
RESULTS = ("malware", "archive-bomb", "blocked-type", "encrypted", "unscannable")
"""Results other than ``clean``, strongest first."""


@dataclass
class Item:
    """Bytes for the engine: the whole message, or one decoded part."""

    label: str
    data: bytes


@dataclass
class Findings:
    malware: list[tuple[str, str]] = field(default_factory=list)
    """(signature, where)."""
    blocked: list[str] = field(default_factory=list)
    bombs: list[str] = field(default_factory=list)
    encrypted: list[str] = field(default_factory=list)
    unscannable: list[str] = field(default_factory=list)
    parts: int = 0
    members: int = 0


def _label(part: mime.Part) -> str:
    return f"part {part.path}" + (f" ({part.filename})" if part.filename else "")


def analyse(raw: bytes, policy: Antimalware) -> tuple[Findings, list[Item]]:
    """Built-in checks on a message and the items the engine should scan (each distinct one once)."""
    findings = Findings()
    items: list[Item] = []
    seen: set[bytes] = set()

    def add(label: str, data: bytes) -> None:
        digest = hashlib.blake2b(data, digest_size=16).digest()
        if data and digest not in seen:
            seen.add(digest)
            items.append(Item(label, data))

    if len(raw) <= policy.stream_max_length:
        add("message", raw)
    types = policy.file_types if policy.file_filter else []
    parts = mime.walk(raw)
    findings.parts = len(parts)
    for part in parts:
        where = _label(part)
        head = part.payload[: filetypes.HEAD]
        kind = filetypes.detect(head)
        if kind == "zip":
            kind = archives.zip_kind(part.payload)
        hit = filetypes.check(part.filename, kind, types)
        if hit is not None:
            findings.blocked.append(f"{where}: {hit.matched}")
        if kind in filetypes.ARCHIVE_TYPES:
            report = archives.inspect(part.payload, kind, part.filename or f"part-{part.path}", policy.archives)
            findings.members += len(report.members)
            if report.bomb is not None:
                findings.bombs.append(f"{where}: {report.bomb}")
            findings.encrypted += [f"{where}: {path}" for path in report.encrypted]
            for member in report.members:
                hit = filetypes.check(member.name, member.kind, types)
                if hit is not None:
                    findings.blocked.append(f"{where}: {member.path}: {hit.matched}")
        if len(part.payload) > policy.stream_max_length:
            findings.unscannable.append(f"{where}: {len(part.payload)} bytes, above stream_max_length")
        else:
            add(where, part.payload)
    return findings, items


def add_engine_results(findings: Findings, results: list[tuple[Item, ScanResult]]) -> None:
    """Fold the engine's answers into the findings."""
    for item, result in results:
        if result.found is not None:
            findings.malware.append((result.found, item.label))
        elif result.error is not None:
            findings.unscannable.append(f"{item.label}: {result.error}")


def decide(findings: Findings, policy: Antimalware) -> Verdict:
    """The verdict: malware > archive bomb > blocked type > encrypted > unscannable > clean."""
    counted = {
        "malware": [f"{name} in {where}" for name, where in findings.malware],
        "archive-bomb": findings.bombs,
        "blocked-type": findings.blocked,
        "encrypted": findings.encrypted if policy.encrypted == "block" else [],
        "unscannable": findings.unscannable if policy.unscannable == "block" else [],
    }
    result = next((name for name in RESULTS if counted[name]), "clean")
    detail: dict[str, object] = {
        "names": sorted({name for name, _ in findings.malware}),
        "findings": {name: values for name, values in counted.items() if values},
        "parts": findings.parts,
        "members": findings.members,
    }
    if findings.encrypted and policy.encrypted == "allow":
        detail["encrypted_allowed"] = findings.encrypted
    if findings.unscannable and policy.unscannable == "allow":
        detail["unscannable_allowed"] = findings.unscannable
    if result != "clean":
        detail["action"] = policy.action
    return Verdict(stage=STAGE, result=result, detail=detail)


def unscanned(reason: str) -> Verdict:
    """The verdict when the engine is unavailable and the policy fails open."""
    return Verdict(stage=STAGE, result="unscanned", detail={"reason": reason, "fail_open": True})


def _safe(text: str) -> str:
    return "".join(c if 32 <= ord(c) < 127 and c != ";" else "_" for c in text)


def report_header(verdict: Verdict, limit: int = 900) -> bytes:
    """``X-Mailmoat-Malware-Report: result=...; ...`` as one CRLF-terminated line of printable ASCII."""
    fields = [f"result={verdict.result}"]
    names = verdict.detail.get("names") or []
    if names:
        fields.append("names=" + ",".join(_safe(n) for n in names))
    findings = verdict.detail.get("findings") or {}
    for kind in ("archive-bomb", "blocked-type", "encrypted", "unscannable"):
        if kind in findings:
            fields.append(f"{kind}={len(findings[kind])}")
    if "action" in verdict.detail:
        fields.append(f"action={verdict.detail['action']}")
    if verdict.detail.get("fail_open"):
        fields.append("fail_open=true")
    value = "; ".join(fields)
    if len(value) > limit:
        value = value[: limit - 3] + "..."
    return HEADER + b": " + value.encode("ascii") + b"\r\n"
