"""MTA-STS (RFC 8461) decisions, without I/O: the ``_mta-sts`` TXT record, the policy file, MX
patterns, the mode in force for a route, and the RFC 8460 result type of a TLS failure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from mailmoat_egress.txtrecord import fields, the_record

StsMode = Literal["enforce", "testing", "none"]
Override = Literal["published", "enforce", "testing", "off"]

MAX_AGE_LIMIT = 31557600
"""The largest ``max_age`` RFC 8461 allows (about a year); larger values are refused."""

_TXT_ID = re.compile(r"^[A-Za-z0-9]{1,32}$")
_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_MX_PATTERN = re.compile(rf"(?:\*\.)?{_LABEL}(?:\.{_LABEL})+")
_HOST = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_FIELD_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")
"""``sts-policy-ext-name`` (RFC 8461 3.2), which the names of the known fields follow too."""


class PolicyError(ValueError):
    """The TXT record or the policy file does not follow RFC 8461."""


def txt_id(records: list[str]) -> str | None:
    """The ``id`` of the one TXT record starting ``v=STSv1``; None when there is none.
    Raises PolicyError when several such records exist or the one found is malformed (RFC 8461 3.1)."""
    record = the_record(records, "STSv1", PolicyError)
    if record is None:
        return None
    found: str | None = None
    for key, value in fields(record, PolicyError):
        if key == "id" and found is None:
            if not _TXT_ID.match(value):
                raise PolicyError(f"id {value!r} is not 1 to 32 letters and digits")
            found = value
    if found is None:
        raise PolicyError("TXT record without id")
    return found


@dataclass(frozen=True)
class StsPolicy:
    mode: StsMode
    max_age: int
    mx: tuple[str, ...]

    def allows(self, host: str) -> bool:
        """Whether MX host ``host`` matches one of the policy's ``mx`` patterns."""
        return any(mx_matches(pattern, host) for pattern in self.mx)

    def to_json(self) -> dict[str, object]:
        return {"mode": self.mode, "max_age": self.max_age, "mx": list(self.mx)}

    @classmethod
    def from_json(cls, data: dict[str, object]) -> StsPolicy:
        mx = data["mx"]
        assert isinstance(mx, list)
        return cls(str(data["mode"]), int(str(data["max_age"])), tuple(str(m) for m in mx))  # type: ignore[arg-type]


def parse_policy(text: str) -> StsPolicy:
    """The policy file (RFC 8461 3.2): ``key: value`` lines ended by LF or CRLF; the first occurrence
    of a field counts (``mx`` may repeat); unknown fields are ignored. Raises PolicyError."""
    fields: dict[str, str] = {}
    mx: list[str] = []
    for line in text.replace("\r\n", "\n").split("\n"):
        if not line.strip():
            continue
        key, sep, value = line.partition(":")
        if not sep or not _FIELD_NAME.fullmatch(key):
            raise PolicyError(f"line {line[:60]!r} is not 'key: value'")
        value = value.strip(" \t")
        if key == "mx":
            pattern = _relative(value.lower())
            if not _MX_PATTERN.fullmatch(pattern):
                raise PolicyError(f"mx {value!r} is not a host name or *.domain pattern")
            mx.append(pattern)
        else:
            fields.setdefault(key, value)
    if fields.get("version") != "STSv1":
        raise PolicyError(f"version {fields.get('version')!r} is not STSv1")
    mode = fields.get("mode")
    if mode not in ("enforce", "testing", "none"):
        raise PolicyError(f"mode {mode!r} is not enforce, testing or none")
    max_age = fields.get("max_age", "")
    if not re.match(r"^[0-9]{1,10}$", max_age) or int(max_age) > MAX_AGE_LIMIT:
        raise PolicyError(f"max_age {max_age!r} is not 0 to {MAX_AGE_LIMIT} seconds")
    if mode != "none" and not mx:
        raise PolicyError(f"mode {mode} without any mx")
    return StsPolicy(mode, int(max_age), tuple(mx))  # type: ignore[arg-type]


def _relative(name: str) -> str:
    """``name`` without the one trailing dot of its absolute form."""
    return name[:-1] if name.endswith(".") else name


def mx_matches(pattern: str, host: str) -> bool:
    """RFC 8461 4.1: an exact name, or ``*.example.com`` matching exactly one more leftmost label, both
    case-insensitive and either absolute (one trailing dot). A host that is no host name (a ``*`` label, an
    empty label, white space, a U-label: MX names come from DNS as A-labels) matches nothing."""
    pattern = _relative(pattern.lower())
    host = _relative(host.lower())
    if not _HOST.fullmatch(host):
        return False
    if pattern.startswith("*."):
        _, dot, rest = host.partition(".")
        return bool(dot) and rest == pattern[2:]
    return host == pattern


def mode_in_force(policy: StsPolicy | None, override: Override) -> StsMode:
    """The mode a delivery follows: ``off`` ignores the policy; ``enforce``/``testing`` replace the
    published mode of a domain that publishes one (``enforce`` or ``testing``); ``published`` takes it."""
    if policy is None or policy.mode == "none" or override == "off":
        return "none"
    return policy.mode if override == "published" else override


ResultType = Literal[
    "starttls-not-supported", "certificate-host-mismatch", "certificate-expired", "certificate-not-trusted",
    "validation-failure", "sts-policy-fetch-error", "sts-policy-invalid", "sts-webpki-invalid",
]


def tls_result_type(message: str) -> ResultType:
    """The RFC 8460 4.3 result type of a failed TLS negotiation, from the delivery's failure text."""
    text = message.lower()
    if "not offered" in text or "refused starttls" in text:
        return "starttls-not-supported"
    if "mismatch" in text or "doesn't match" in text:
        return "certificate-host-mismatch"
    if "expired" in text:
        return "certificate-expired"
    if "self-signed" in text or "self signed" in text or "issuer" in text or "certificate verify failed" in text:
        return "certificate-not-trusted"
    return "validation-failure"


__all__ = [
    "MAX_AGE_LIMIT", "Override", "PolicyError", "ResultType", "StsMode", "StsPolicy", "mode_in_force",
    "mx_matches", "parse_policy", "tls_result_type", "txt_id",
]
