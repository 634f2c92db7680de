"""The antivirus stage's decisions (pure): what to hand the engine, and the verdict from what was found.

``analyse`` runs the built-in checks (MIME walk, common attachment filter by name and true type,
archives within limits, Office macros) and lists what the engine should scan; ``decide`` combines
the engine's results with those findings into the stage's Verdict; ``report_header`` renders it as
the ``X-Mailmoat-Malware-Report`` header line that is prepended to the message.

``detail["strip"]`` (for ``antimalware.action: strip``) lists the MIME part paths of the offending
parts, numbered as ``mime`` numbers them: the message is ``1``, the n-th child of a multipart at
``p`` is ``p.n`` (first-level attachments are ``1.1``, ``1.2``, ...), the message inside a
``message/rfc822`` part at ``p`` is ``p.1``. It is ``None`` when a finding could not be tied to a
part (clamd found malware in the whole message that no decoded part showed, or the whole message
could not be scanned): such a message cannot be stripped, and ``detail["action"]`` says
``quarantine`` even when ``antimalware.action`` is ``strip``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from mailmoat_antivirus import archives, filetypes, macros, mime
from mailmoat_antivirus.clamd import ScanResult
from mailmoat_antivirus.verdict import AntivirusVerdict
from mailmoat_platform.models import Verdict
from mailmoat_platform.stagefault import error_token
from mailmoat_policy import Antimalware

STAGE = "antivirus"
HEADER = b"X-Mailmoat-Malware-Report"
RESULTS = ("malware", "archive-bomb", "blocked-type", "macro", "encrypted", "unscannable")
"""Results other than ``clean``, strongest first."""


@dataclass
class Item:
    """Bytes for the engine: the whole message, or one decoded part."""

    label: str
    data: bytes
    paths: list[str] = field(default_factory=list)
    """Strip paths of the parts with these bytes (none for the whole message)."""


@dataclass
class Findings:
    malware: list[tuple[str, str]] = field(default_factory=list)
    """(signature, where)."""
    blocked: list[str] = field(default_factory=list)
    bombs: list[str] = field(default_factory=list)
    encrypted: list[str] = field(default_factory=list)
    macros: list[str] = field(default_factory=list)
    unscannable: list[str] = field(default_factory=list)
    parts: int = 0
    members: int = 0
    paths: dict[str, set[str]] = field(default_factory=dict)
    """Per result: strip paths of the parts that gave it."""
    part_names: set[str] = field(default_factory=set)
    """Signatures found in decoded parts."""
    message_names: set[str] = field(default_factory=set)
    """Signatures found in the whole message."""
    message_unscannable: bool = False

    def at(self, result: str, part: mime.Part | None) -> None:
        if part is not None:
            self.paths.setdefault(result, set()).add(part.strip_path)


def _label(part: mime.Part) -> str:
    return f"part {part.path}" + (f" ({part.filename})" if part.filename else "")


def analyse(raw: bytes, policy: Antimalware) -> tuple[Findings, list[Item]]:
    """Built-in checks on a message and the items the engine should scan (each distinct one once)."""
    findings = Findings()
    items: list[Item] = []
    seen: dict[bytes, Item] = {}

    def add(label: str, data: bytes, part: mime.Part | None = None) -> None:
        if not data:
            return
        digest = hashlib.blake2b(data, digest_size=16).digest()
        item = seen.get(digest)
        if item is None:
            item = seen[digest] = Item(label, data)
            items.append(item)
        if part is not None and part.strip_path not in item.paths:
            item.paths.append(part.strip_path)

    if len(raw) <= policy.stream_max_length:
        add("message", raw)
    types = policy.file_types if policy.file_filter else []
    walked = mime.walk_message(raw)
    parts = walked.parts
    findings.parts = len(parts)
    if walked.too_deep is not None:
        findings.unscannable.append(f"MIME parts nested deeper than {mime.mimeparts.MAX_DEPTH} levels not examined")
        findings.message_unscannable = True
    if walked.too_encoded is not None:
        findings.unscannable.append(f"attached messages sent transfer-encoded, more than {mime.mimeparts.MAX_ENCODED} "
                                    "one inside another, not examined")
        findings.message_unscannable = True
    if walked.too_many:
        findings.unscannable.append(f"more than {mime.MAX_PARTS} MIME parts: the rest not examined")
        findings.message_unscannable = True
    for part in parts:
        where = _label(part)
        head = part.payload[: filetypes.HEAD]
        kind = filetypes.detect(head)
        if kind == "zip":
            kind = archives.zip_kind(part.payload)
        hit = filetypes.check(part.filename, kind, types)
        if hit is not None:
            findings.blocked.append(f"{where}: {hit.matched}")
            findings.at("blocked-type", part)
        if macros.has_macros(part.payload, kind):
            findings.macros.append(where)
            findings.at("macro", part)
        if kind in filetypes.ARCHIVE_TYPES:
            report = archives.inspect(part.payload, kind, part.filename or f"part-{part.path}", policy.archives)
            findings.members += len(report.members)
            if report.bomb is not None:
                findings.bombs.append(f"{where}: {report.bomb}")
                findings.at("archive-bomb", part)
            if report.encrypted:
                findings.encrypted += [f"{where}: {path}" for path in report.encrypted]
                findings.at("encrypted", part)
            for member in report.members:
                hit = filetypes.check(member.name, member.kind, types)
                if hit is not None:
                    findings.blocked.append(f"{where}: {member.path}: {hit.matched}")
                    findings.at("blocked-type", part)
                if member.macros:
                    findings.macros.append(f"{where}: {member.path}")
                    findings.at("macro", part)
            for path, data in report.extracted:
                add(f"{where}: {path}", data, part)
        if len(part.payload) > policy.stream_max_length:
            findings.unscannable.append(f"{where}: {len(part.payload)} bytes, above stream_max_length")
            findings.at("unscannable", part)
        else:
            add(where, part.payload, part)
    return findings, items


def add_engine_results(findings: Findings, results: list[tuple[Item, ScanResult]]) -> None:
    """Fold the engine's answers into the findings."""
    for item, result in results:
        if result.found is not None:
            findings.malware.append((result.found, item.label))
            if item.paths:
                findings.paths.setdefault("malware", set()).update(item.paths)
                findings.part_names.add(result.found)
            else:
                findings.message_names.add(result.found)
        elif result.error is not None:
            findings.unscannable.append(f"{item.label}: {result.error}")
            if item.paths:
                findings.paths.setdefault("unscannable", set()).update(item.paths)
            else:
                findings.message_unscannable = True


def decide(findings: Findings, policy: Antimalware, scans: int | None = None) -> Verdict:
    """The verdict (its detail an ``AntivirusVerdict``): malware > archive bomb > blocked type > macro >
    encrypted > unscannable > clean; ``scans``: how many items the engine scanned."""
    counted = {
        "malware": [f"{name} in {where}" for name, where in findings.malware],
        "archive-bomb": findings.bombs,
        "blocked-type": findings.blocked,
        "macro": findings.macros if policy.macros == "block" else [],
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
    if scans is not None:
        detail["scans"] = scans
    if findings.encrypted and policy.encrypted == "allow":
        detail["encrypted_allowed"] = findings.encrypted
    if findings.unscannable and policy.unscannable == "allow":
        detail["unscannable_allowed"] = findings.unscannable
    if findings.macros and policy.macros == "allow":
        detail["macros_allowed"] = findings.macros
    if result != "clean":
        detail["action"] = policy.action
        detail["strip"] = strip_paths(findings, [name for name, values in counted.items() if values])
        if policy.action == "strip" and detail["strip"] is None:
            detail["action"] = "quarantine"  # nothing that can be stripped alone: keep it whole
            detail["action_reason"] = "strip impossible: a finding is not tied to a MIME part"
    return Verdict(stage=STAGE, result=result, detail=AntivirusVerdict.wire(**detail))


def _path_key(path: str) -> list[int]:
    return [int(n) if n.isdigit() else 0 for n in path.split(".")]


def strip_paths(findings: Findings, results: list[str]) -> list[str] | None:
    """The strip paths of the parts behind the counted results, or None when one is not tied to a part."""
    if "malware" in results and findings.message_names - findings.part_names:
        return None
    if "unscannable" in results and findings.message_unscannable:
        return None
    paths: set[str] = set()
    for result in results:
        paths |= findings.paths.get(result, set())
    if not paths:
        return None
    # A part inside one already stripped goes with it.
    ordered = sorted(paths, key=_path_key)
    return [p for p in ordered if not any(p.startswith(q + ".") for q in ordered if q != p)]


def unscanned(reason: str) -> Verdict:
    """The verdict when the engine is unavailable and the policy fails open."""
    return Verdict(stage=STAGE, result="unscanned", detail=AntivirusVerdict.wire(reason=reason, fail_open=True))


def failed(detail: dict[str, str], policy: Antimalware) -> Verdict:
    """The verdict when the stage's own checks failed on the message (``mailmoat_platform.stagefault``):
    ``unscannable`` with ``action: quarantine`` (the sender did nothing wrong: a release brings the
    message through once the fault is fixed; nothing is tied to a part, so never strip), or ``unscanned``
    when the policy allows unscannable content (``antimalware.unscannable: allow``)."""
    reason = f"the antivirus stage failed on this message: {detail['error']}"
    if policy.unscannable == "allow":
        return Verdict(stage=STAGE, result="unscanned",
                       detail=AntivirusVerdict.wire(**detail, unscannable_allowed=[reason]))
    return Verdict(stage=STAGE, result="unscannable", detail=AntivirusVerdict.wire(
        **detail, names=[], findings={"unscannable": [reason]}, action="quarantine", strip=None,
    ))


def _safe(text: str) -> str:
    return "".join(c if 32 <= ord(c) < 127 and c != ";" else "_" for c in text)


def report_header(verdict: Verdict, limit: int = 900) -> bytes:
    """``X-Mailmoat-Malware-Report: result=...; ...`` as one CRLF-terminated line of printable ASCII."""
    fields = [f"result={verdict.result}"]
    names = verdict.detail.get("names") or []
    if names:
        fields.append("names=" + ",".join(_safe(n) for n in names))
    findings = verdict.detail.get("findings") or {}
    for kind in ("archive-bomb", "blocked-type", "macro", "encrypted", "unscannable"):
        if kind in findings:
            fields.append(f"{kind}={len(findings[kind])}")
    if "action" in verdict.detail:
        fields.append(f"action={verdict.detail['action']}")
    if verdict.detail.get("fail_open"):
        fields.append("fail_open=true")
    if verdict.detail.get("error_type"):
        fields.append(f"error={error_token(verdict.detail)}")
    value = "; ".join(fields)
    if len(value) > limit:
        value = value[: limit - 3] + "..."
    return HEADER + b": " + value.encode("ascii") + b"\r\n"
