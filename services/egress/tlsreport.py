"""TLS reports (RFC 8460) without I/O: the ``_smtp._tls`` TXT record, the daily aggregate report
(JSON, section 4.4) and the mail that carries it gzipped (section 5.3).

Only ``mailto:`` rua URIs are used; ``https:`` ones (POST, section 5.4) are recognised and left out.
"""

from __future__ import annotations

import base64
import gzip
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any
from urllib.parse import unquote

from mailmoat_egress.tlsrpt import SUCCESS, AppliedPolicy, FailureDetail
from mailmoat_egress.txtrecord import fields, the_record
from mailmoat_platform.models import Envelope, Verdict, new_message_id

_ADDRESS = re.compile(r"[^@\s<>]+@[^@\s<>]+")
"""An address with a dot inside its domain (checked apart: one pattern for both backtracks quadratically on a
long domain without one, and the record is the recipient domain's to write)."""


MARK = "tlsrpt"
"""Verdict key that marks a report mail: egress delivers it without MTA-STS and does not count it
(RFC 8460 5.3: reports are delivered despite TLS failures, and not reported on)."""


class RecordError(ValueError):
    """The ``_smtp._tls`` TXT record does not follow RFC 8460 section 3."""


@dataclass(frozen=True)
class Rua:
    mailto: tuple[str, ...]
    https: tuple[str, ...]
    """Not sent to (yet)."""


def parse_record(records: list[str]) -> Rua | None:
    """The rua of the one TXT record starting ``v=TLSRPTv1``; None when there is none. Raises
    RecordError for several such records, a record without rua, or a rua URI of another scheme."""
    record = the_record(records, "TLSRPTv1", RecordError)
    if record is None:
        return None
    rua: str | None = None
    for key, value in fields(record, RecordError, free=("rua",)):
        if key == "rua" and rua is None:
            rua = value.strip()
    if not rua:
        raise RecordError("TXT record without rua")
    mailto: list[str] = []
    https: list[str] = []
    for uri in (u.strip() for u in rua.split(",")):
        if uri.lower().startswith("mailto:"):
            address = unquote(uri[7:].split("?", 1)[0])
            domain = address.rpartition("@")[2]
            if not _ADDRESS.fullmatch(address) or "." not in domain[1:-1]:
                raise RecordError(f"rua {uri!r} is not a mail address")
            mailto.append(address)
        elif uri.lower().startswith("https://"):
            https.append(uri)
        else:
            raise RecordError(f"rua {uri!r} is neither mailto: nor https:")
    return Rua(tuple(mailto), tuple(https))


def day_range(day: datetime) -> tuple[datetime, datetime]:
    """Start and end of the UTC day of ``day`` (the end at 23:59:59, as RFC 8460's example)."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return start, start + timedelta(days=1, seconds=-1)


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def build_report(*, organization: str, contact: str, report_id: str, domain: str, day: datetime,
                 policy: AppliedPolicy | None, counts: Mapping[str, int],
                 failures: Mapping[FailureDetail, int]) -> dict[str, Any]:
    """The RFC 8460 section 4.4 report of one policy domain for one UTC day."""
    policy = policy or AppliedPolicy("no-policy-found")
    body: dict[str, Any] = {"policy-type": policy.policy_type}
    if policy.policy_type != "no-policy-found":
        body["policy-string"] = list(policy.policy_string)
    body["policy-domain"] = domain
    if policy.mx_host:
        body["mx-host"] = list(policy.mx_host)
    details = []
    for detail, count in sorted(failures.items(), key=lambda item: (item[0].field(), item[1])):
        entry: dict[str, Any] = {"result-type": detail.result_type}
        if detail.sending_mta_ip:
            entry["sending-mta-ip"] = detail.sending_mta_ip
        if detail.receiving_mx_hostname:
            entry["receiving-mx-hostname"] = detail.receiving_mx_hostname
        if detail.receiving_ip:
            entry["receiving-ip"] = detail.receiving_ip
        entry["failed-session-count"] = count
        details.append(entry)
    start, end = day_range(day)
    return {
        "organization-name": organization,
        "date-range": {"start-datetime": _stamp(start), "end-datetime": _stamp(end)},
        "contact-info": contact,
        "report-id": report_id,
        "policies": [{
            "policy": body,
            "summary": {
                "total-successful-session-count": int(counts.get(SUCCESS, 0)),
                "total-failure-session-count": sum(int(v) for k, v in counts.items() if k != SUCCESS),
            },
            "failure-details": details,
        }],
    }


def report_id(submitter: str, domain: str, day: datetime) -> str:
    """One id per (submitter, domain, day): the same report built twice has the same id."""
    return f"{day:%Y-%m-%d}.{domain}@{submitter}"


def filename(submitter: str, domain: str, day: datetime) -> str:
    """``sender!policy-domain!begin-timestamp!end-timestamp.json.gz`` (RFC 8460 section 5.3)."""
    start, end = day_range(day)
    return f"{submitter}!{domain}!{int(start.timestamp())}!{int(end.timestamp())}.json.gz"


def compress(report: dict[str, Any]) -> bytes:
    """The report as gzipped UTF-8 JSON (mtime 0: the same report gives the same bytes)."""
    return gzip.compress(json.dumps(report, separators=(",", ":")).encode("utf-8"), mtime=0)


def _wrap(data: bytes) -> str:
    text = base64.b64encode(data).decode("ascii")
    return "\r\n".join(text[i:i + 76] for i in range(0, len(text), 76))


def build_mail(report: dict[str, Any], *, domain: str, submitter: str, sender: str, recipients: list[str],
               day: datetime, now: datetime) -> tuple[Envelope, bytes]:
    """The report mail (multipart/report; report-type="tlsrpt") and its envelope, to be routed as
    outbound mail; its Message-ID is the report id."""
    rid = report["report-id"]
    message_id = f"<{rid}>"
    envelope_id = new_message_id()
    boundary = f"=_mailmoat_tlsrpt_{envelope_id}"
    crlf = "\r\n"
    headers = [
        f"From: <{sender}>",
        f"To: {', '.join(f'<{r}>' for r in recipients)}",
        f"Subject: Report Domain: {domain}{crlf} Submitter: {submitter}{crlf} Report-ID: <{rid}>",
        f"Date: {format_datetime(now)}",
        f"Message-ID: {message_id}",
        f"TLS-Report-Domain: {domain}",
        f"TLS-Report-Submitter: {submitter}",
        "Auto-Submitted: auto-generated",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type="tlsrpt";{crlf} boundary="{boundary}"',
    ]
    text = (f"This is an aggregate TLS report from {submitter} about mail delivered to {domain}"
            f" on {day:%Y-%m-%d} (UTC).")
    body = crlf.join([
        crlf.join(headers), "",
        "This is a multipart message in MIME format.", "",
        f"--{boundary}",
        'Content-Type: text/plain; charset="us-ascii"',
        "Content-Transfer-Encoding: 7bit", "",
        text, "",
        f"--{boundary}",
        "Content-Type: application/tlsrpt+gzip",
        "Content-Transfer-Encoding: base64",
        f'Content-Disposition: attachment;{crlf} filename="{filename(submitter, domain, day)}"', "",
        _wrap(compress(report)), "",
        f"--{boundary}--", "",
    ]).encode("ascii")
    envelope = Envelope(
        id=envelope_id, received_at=now, mail_from=sender, rcpt_to=list(recipients), size=len(body),
        message_id_header=message_id, direction="outbound", itinerary=["routing", "egress"],
        verdicts={MARK: Verdict(stage="egress", result="report", detail={"domain": domain, "report_id": rid})},
    )
    return envelope, body


__all__ = ["MARK", "RecordError", "Rua", "build_mail", "build_report", "compress", "day_range", "filename",
           "parse_record", "report_id"]
