"""TLS reports (RFC 8460) without I/O: the ``_smtp._tls`` record, the aggregate report against a JSON
Schema written from section 4.4, and the report mail of section 5.3."""

from __future__ import annotations

import copy
import email
import email.policy
import gzip
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from mailmoat_egress.mtasts import StsPolicy
from mailmoat_egress.stsdelivery import applied_policy
from mailmoat_egress.tlsreport import (
    RecordError,
    build_mail,
    build_report,
    filename,
    parse_record,
    report_id,
)
from mailmoat_egress.tlsrpt import AppliedPolicy, FailureDetail

SCHEMA = json.loads((Path(__file__).parents[1] / "data" / "tlsrpt.schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
DAY = datetime(2026, 12, 4, 17, 3, tzinfo=UTC)
POLICY = applied_policy(StsPolicy("testing", 86400, ("*.mail.company-y.example",)))

RFC_EXAMPLE: dict[str, Any] = {
    "organization-name": "Company-X",
    "date-range": {"start-datetime": "2016-04-01T00:00:00Z", "end-datetime": "2016-04-01T23:59:59Z"},
    "contact-info": "sts-reporting@company-x.example",
    "report-id": "5065427c-23d3-47ca-b6e0-946ea0e8c4be",
    "policies": [{
        "policy": {
            "policy-type": "sts",
            "policy-string": ["version: STSv1", "mode: testing", "mx: *.mail.company-y.example", "max_age: 86400"],
            "policy-domain": "company-y.example",
            "mx-host": ["*.mail.company-y.example"],
        },
        "summary": {"total-successful-session-count": 5326, "total-failure-session-count": 303},
        "failure-details": [
            {"result-type": "certificate-expired", "sending-mta-ip": "2001:db8:abcd:0012::1",
             "receiving-mx-hostname": "mx1.mail.company-y.example", "failed-session-count": 100},
            {"result-type": "starttls-not-supported", "sending-mta-ip": "2001:db8:abcd:0013::1",
             "receiving-mx-hostname": "mx2.mail.company-y.example", "receiving-ip": "203.0.113.56",
             "failed-session-count": 200,
             "additional-information": "https://reports.company-x.example/report_info?id=5065427c-23d3#StarttlsNotSupported"},
            {"result-type": "validation-failure", "sending-mta-ip": "198.51.100.62", "receiving-ip": "203.0.113.58",
             "receiving-mx-hostname": "mx-backup.mail.company-y.example", "failed-session-count": 3,
             "failure-reason-code": "X509_V_ERR_PROOF_OF_POSSESSION"},
        ],
    }],
}


def _report(**kw: Any) -> dict[str, Any]:
    args: dict[str, Any] = dict(
        organization="Contoso", contact="tls@contoso.example", report_id=report_id("gw.contoso.example",
                                                                                 "company-y.example", DAY),
        domain="company-y.example", day=DAY, policy=POLICY,
        counts={"successful": 7, "certificate-expired": 2, "starttls-not-supported": 1},
        failures={FailureDetail("certificate-expired", "198.51.100.25", "mx1.mail.company-y.example"): 2,
                  FailureDetail("starttls-not-supported"): 1},
    )
    args.update(kw)
    return build_report(**args)


def test_schema_accepts_the_rfc_example_and_refuses_broken_reports() -> None:
    VALIDATOR.validate(RFC_EXAMPLE)
    broken = []
    for path, value in [
        (("report-id",), None),
        (("policies", 0, "policy", "policy-type"), "dmarc"),
        (("policies", 0, "summary", "total-failure-session-count"), "303"),
        (("policies", 0, "failure-details", 0, "result-type"), "tls-broken"),
        (("policies", 0, "failure-details", 0, "sending-mta-ip"), "not-an-ip"),
        (("date-range", "start-datetime"), "2016-04-01"),
    ]:
        report = copy.deepcopy(RFC_EXAMPLE)
        target: Any = report
        for key in path[:-1]:
            target = target[key]
        if value is None:
            del target[path[-1]]
        else:
            target[path[-1]] = value
        broken.append(report)
    for report in broken:
        assert not VALIDATOR.is_valid(report)


def test_report_is_rfc_8460_json() -> None:
    report = _report()
    VALIDATOR.validate(report)
    assert report["date-range"] == {"start-datetime": "2026-12-04T00:00:00Z", "end-datetime": "2026-12-04T23:59:59Z"}
    assert report["report-id"] == "2026-12-04.company-y.example@gw.contoso.example"
    (entry,) = report["policies"]
    assert entry["policy"] == RFC_EXAMPLE["policies"][0]["policy"]
    assert entry["summary"] == {"total-successful-session-count": 7, "total-failure-session-count": 3}
    assert entry["failure-details"] == [
        {"result-type": "certificate-expired", "sending-mta-ip": "198.51.100.25",
         "receiving-mx-hostname": "mx1.mail.company-y.example", "failed-session-count": 2},
        {"result-type": "starttls-not-supported", "failed-session-count": 1},
    ]


def test_report_without_policy_or_failures() -> None:
    report = _report(policy=None, counts={"sts-policy-fetch-error": 4}, failures={})
    VALIDATOR.validate(report)
    policy = report["policies"][0]["policy"]
    assert policy == {"policy-type": "no-policy-found", "policy-domain": "company-y.example"}
    assert report["policies"][0]["summary"]["total-failure-session-count"] == 4
    ok = _report(counts={"successful": 3}, failures={})
    VALIDATOR.validate(ok)
    assert ok["policies"][0]["failure-details"] == []


def test_applied_policy_lines() -> None:
    assert POLICY == AppliedPolicy("sts", ("version: STSv1", "mode: testing", "mx: *.mail.company-y.example",
                                           "max_age: 86400"), ("*.mail.company-y.example",))
    assert applied_policy(None).policy_type == "no-policy-found"


def test_parse_record() -> None:
    rua = parse_record(["v=spf1 -all", "v=TLSRPTv1; rua=mailto:tls@example.com,mailto:b%2Bx@example.net, https://r.example/x"])
    assert rua is not None
    assert rua.mailto == ("tls@example.com", "b+x@example.net")
    assert rua.https == ("https://r.example/x",)
    assert parse_record(["v=TLSRPTv1;rua=mailto:a@example.com;"]).mailto == ("a@example.com",)  # type: ignore[union-attr]
    assert parse_record(["v=spf1 -all"]) is None
    assert parse_record([]) is None
    assert parse_record(["v=TLSRPTv1"]) is None  # does not begin with "v=TLSRPTv1;": discarded (RFC 8460 3)
    for bad in (["v=TLSRPTv1; rua=mailto:a@example.com", "v=TLSRPTv1; rua=mailto:b@example.com"],
                ["v=TLSRPTv1;"], ["v=TLSRPTv1; rua=ftp://x.example"], ["v=TLSRPTv1; rua=mailto:nobody"]):
        with pytest.raises(RecordError):
            parse_record(bad)


def test_parse_record_refuses_what_is_not_the_record_syntax() -> None:
    """RFC 8460 3: fields after ``*WSP ";" *WSP`` delimiters, extension values of printable ASCII without
    space, ``=`` and ``;``; a record of other syntax is no record (no report)."""
    assert parse_record(["v=TLSRPTv1 ; rua=mailto:a@example.com ; ext.1=x ; "]).mailto == (  # type: ignore[union-attr]
        "a@example.com",)
    assert parse_record(["v=TLSRPTv1; ; rua=mailto:a@example.com;; "]).mailto == ("a@example.com",)  # type: ignore[union-attr]
    for bad in ("v=TLSRPTv1; rua=mailto:a@example.com; ext=a b", "v=TLSRPTv1; rua=mailto:a@example.com; -x=1"):
        with pytest.raises(RecordError):
            parse_record([bad])


def test_report_mail_follows_section_5_3() -> None:
    report = _report()
    now = datetime(2026, 12, 5, 0, 10, tzinfo=UTC)
    envelope, data = build_mail(report, domain="company-y.example", submitter="gw.contoso.example",
                                sender="tlsrpt@contoso.example", recipients=["tls@company-y.example"], day=DAY, now=now)
    assert envelope.mail_from == "tlsrpt@contoso.example"
    assert envelope.rcpt_to == ["tls@company-y.example"]
    assert envelope.direction == "outbound" and envelope.itinerary == ["routing", "egress"]
    assert envelope.size == len(data)
    assert b"\r\n" in data and b"\n" not in data.replace(b"\r\n", b"")
    assert max(len(line) for line in data.split(b"\r\n")) <= 998
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert message.get_content_type() == "multipart/report"
    assert message.get_param("report-type") == "tlsrpt"
    assert message["TLS-Report-Domain"] == "company-y.example"
    assert message["TLS-Report-Submitter"] == "gw.contoso.example"
    assert " ".join(str(message["Subject"]).split()) == (
        "Report Domain: company-y.example Submitter: gw.contoso.example "
        "Report-ID: <2026-12-04.company-y.example@gw.contoso.example>")
    assert message["Message-ID"] == envelope.message_id_header
    text, attachment = message.iter_parts()
    assert text.get_content_type() == "text/plain"
    assert attachment.get_content_type() == "application/tlsrpt+gzip"
    assert attachment.get_filename() == filename("gw.contoso.example", "company-y.example", DAY)
    assert attachment.get_filename() == "gw.contoso.example!company-y.example!1796342400!1796428799.json.gz"
    assert json.loads(gzip.decompress(attachment.get_content())) == report
