"""MTA-STS (RFC 8461) without I/O: TXT record, policy file, MX patterns, mode in force, result types."""

from __future__ import annotations

import pytest

from mailmoat_egress.delivery import make_result
from mailmoat_egress.mtasts import (
    MAX_AGE_LIMIT,
    PolicyError,
    StsPolicy,
    mode_in_force,
    mx_matches,
    parse_policy,
    tls_result_type,
    txt_id,
)
from mailmoat_egress.stsdelivery import StsPlan, session_result
from mailmoat_platform.models import Route
from mailmoat_policy import Policy

GOOD = "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmax_age: 604800\r\n"


def test_txt_id() -> None:
    assert txt_id(["v=STSv1; id=20160831085700Z;"]) == "20160831085700Z"
    assert txt_id(["v=STSv1;id=abc", "v=spf1 -all"]) == "abc"
    assert txt_id(["v=spf1 -all"]) is None
    assert txt_id([]) is None


@pytest.mark.parametrize("records", [
    ["v=STSv1; id=a", "v=STSv1; id=b"],   # two records: no policy (RFC 8461 3.1)
    ["v=STSv1;"],                          # no id
    ["v=STSv1; id=has-dash"],              # id is letters and digits
    ["v=STSv1; id=" + "a" * 33],           # at most 32
])
def test_txt_id_refused(records: list[str]) -> None:
    with pytest.raises(PolicyError):
        txt_id(records)


def test_txt_records_not_beginning_with_the_version_and_semicolon_are_discarded() -> None:
    """RFC 8461 3.1: a bare ``v=STSv1`` is discarded before the records are counted, so it cannot hide the
    domain's real record behind 'more than one record'."""
    assert txt_id(["v=STSv1", "v=STSv1; id=good"]) == "good"
    assert txt_id(["v=STSv1"]) is None
    assert txt_id(["v=STSv1 ;id=abc ; "]) == "abc"


@pytest.mark.parametrize("record", [
    "v=STSv1; id=abc; _ext=x",      # a field name starts with a letter or digit
    "v=STSv1; id=abc; ext=",        # a value is not empty
    "v=STSv1; id=abc; ext=a b",     # nor holds a space
    "v=STSv1; id=abc; ext=\u00fc",  # nor other than printable ASCII
    "v=STSv1; id=abc; garbage",
])
def test_txt_records_that_are_syntactically_invalid_give_no_policy(record: str) -> None:
    """RFC 8461 3.1: a syntactically invalid record MUST be taken as no policy."""
    with pytest.raises(PolicyError):
        txt_id([record])


def test_txt_records_with_plain_slips_are_read() -> None:
    """White space after the last field and empty fields change nothing a record says: read past (as
    postfix-mta-sts-resolver does), not taken as no policy (an enforce policy would be dropped for them)."""
    for record in ("v=STSv1; id=abc ", "v=STSv1; ; id=abc", "v=STSv1; id=abc;;;", "v=STSv1;;id=abc;\t"):
        assert txt_id([record]) == "abc", record


def test_txt_record_fields_of_any_valid_syntax_are_taken() -> None:
    assert txt_id(["v=STSv1;\tid=abc;\text.name-1_x=value"]) == "abc"
    assert txt_id(["v=STSv1; ext=https://x.example; id=abc"]) == "abc"
    assert txt_id(["v=STSv1; id=abc; id=x-y"]) == "abc"  # the first id counts; a later one is any field


def test_parse_policy() -> None:
    policy = parse_policy(GOOD)
    assert policy == StsPolicy("enforce", 604800, ("mail.example.com", "*.example.net"))
    assert parse_policy(GOOD.replace("\r\n", "\n")) == policy
    assert parse_policy("version: STSv1\nmode: none\nmax_age: 0\n").mode == "none"
    # the first occurrence counts; unknown fields are ignored
    assert parse_policy(GOOD + "mode: testing\nextension: x\n").mode == "enforce"


@pytest.mark.parametrize("text", [
    GOOD.replace("STSv1", "STSv2"),
    GOOD.replace("version: STSv1\r\n", ""),
    GOOD.replace("enforce", "Enforce"),
    GOOD.replace("max_age: 604800", f"max_age: {MAX_AGE_LIMIT + 1}"),
    GOOD.replace("max_age: 604800", "max_age: -1"),
    GOOD.replace("max_age: 604800\r\n", ""),
    "version: STSv1\nmode: testing\nmax_age: 86400\n",   # testing without mx
    GOOD + "garbage line\n",
    GOOD.replace("*.example.net", "mail.*.example.net"),
    GOOD.replace("*.example.net", "*"),
    "<html>not found</html>",
])
def test_parse_policy_refused(text: str) -> None:
    with pytest.raises(PolicyError):
        parse_policy(text)


def test_mx_matches() -> None:
    assert mx_matches("mail.example.com", "MAIL.example.com.")
    assert not mx_matches("mail.example.com", "mail2.example.com")
    assert mx_matches("*.example.net", "mx1.example.net")
    assert not mx_matches("*.example.net", "a.mx1.example.net"), "a wildcard is one label"
    assert not mx_matches("*.example.net", "example.net")
    assert not mx_matches("*.example.net", "mx1.evilexample.net")


@pytest.mark.parametrize("host", [
    "*.example.net",        # a '*' label is no host name: it is not the one label the wildcard stands for
    "*.example.net.",
    "mail.example.com..",   # one trailing dot is the absolute form, two are no name
    ".mail.example.com",
    "mx1..example.net",
    " mail.example.com",
    "mail.example.com\n",
    "-mx.example.net",
    "m\u00fcnchen.example.net",
])
def test_mx_host_that_is_no_host_name_matches_nothing(host: str) -> None:
    policy = StsPolicy("enforce", 86400, ("mail.example.com", "*.example.net", "münchen.example.net"))
    assert not policy.allows(host)


def test_mx_pattern_and_host_in_absolute_form() -> None:
    assert mx_matches("*.example.net.", "MX1.Example.Net.")
    assert mx_matches("mail.example.com.", "mail.example.com")
    assert not mx_matches("mail.example.com..", "mail.example.com")


def test_policy_mx_takes_one_trailing_dot_only() -> None:
    assert parse_policy(GOOD.replace("mail.example.com", "Mail.Example.Com.")).mx[0] == "mail.example.com"
    with pytest.raises(PolicyError):
        parse_policy(GOOD.replace("mail.example.com", "mail.example.com.."))


def test_policy_field_names_follow_the_extension_syntax() -> None:
    """RFC 8461 3.2: ``sts-policy-ext-name`` takes dots; a policy with such a field is valid (refusing it
    dropped the domain's policy, in enforce mode too)."""
    assert parse_policy(GOOD + "ext.example-1_x: value\r\n").mode == "enforce"
    assert parse_policy(GOOD + "a" * 32 + ": value\r\n").mode == "enforce"
    for name in ("_ext", "-ext", "a" * 33, "ext name"):
        with pytest.raises(PolicyError):
            parse_policy(GOOD + f"{name}: value\r\n")


def test_mode_in_force() -> None:
    enforce, testing = parse_policy(GOOD), parse_policy(GOOD.replace("enforce", "testing"))
    none = parse_policy("version: STSv1\nmode: none\nmax_age: 60\n")
    assert mode_in_force(enforce, "published") == "enforce"
    assert mode_in_force(testing, "published") == "testing"
    assert mode_in_force(testing, "enforce") == "enforce"
    assert mode_in_force(enforce, "testing") == "testing"
    assert mode_in_force(enforce, "off") == "none"
    assert mode_in_force(None, "enforce") == "none", "nothing to enforce without a published policy"
    assert mode_in_force(none, "enforce") == "none"


def test_tls_result_types() -> None:
    assert tls_result_type("4.7.4 TLS is required, but was not offered by mx") == "starttls-not-supported"
    mismatch = ("4.7.5 TLS with mx failed: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: "
                "Hostname mismatch, certificate is not valid for 'mx'.")
    assert tls_result_type(mismatch) == "certificate-host-mismatch"
    assert tls_result_type("certificate verify failed: certificate has expired") == "certificate-expired"
    assert tls_result_type("certificate verify failed: self-signed certificate") == "certificate-not-trusted"
    assert tls_result_type("certificate verify failed: unable to get local issuer certificate") \
        == "certificate-not-trusted"
    assert tls_result_type("handshake failure") == "validation-failure"


def test_plan_tls_and_session_results() -> None:
    route = Route(name="mx:example.com", kind="mx", domain="example.com", tls="opportunistic")
    policy = parse_policy(GOOD)
    enforce = StsPlan("example.com", "enforce", policy)
    testing = StsPlan("example.com", "testing", policy)
    assert enforce.tls(route) == ("verify", None) and enforce.allow is not None
    assert testing.tls(route) == ("sts-testing", None) and testing.allow is None
    assert StsPlan().tls(route) == ("opportunistic", None)
    ok = make_result("a@example.com", 250, "ok", "mail.example.com", "TLSv1.3")
    assert session_result(enforce, ok) == "successful"
    assert session_result(StsPlan(), ok) is None
    clear = make_result("a@example.com", 250, "ok", "mail.example.com", None)
    assert session_result(testing, clear) == "starttls-not-supported"
    other = make_result("a@example.com", 250, "ok", "mx.elsewhere.org", "TLSv1.3")
    assert session_result(testing, other) == "validation-failure"
    ok.tls_failure = "certificate verify failed: self-signed certificate"
    assert session_result(testing, ok) == "certificate-not-trusted"
    refused = make_result("a@example.com", 451, "4.7.5 no MX host matches the MTA-STS policy of example.com")
    assert session_result(enforce, refused) == "validation-failure"
    unreachable = make_result("a@example.com", 421, "4.4.1 cannot connect to mail.example.com:25")
    assert session_result(enforce, unreachable) is None


def test_policy_fields() -> None:
    policy = Policy.model_validate({"outbound": {"mta_sts": "testing", "mta_sts_port": 8443,
                                                 "per_route": {"mx": {"mta_sts": "off"}}}})
    assert policy.outbound.mta_sts_for("mx:example.com") == "off"
    assert policy.outbound.mta_sts_for("connector:partner") == "testing"
    assert Policy.model_validate({}).outbound.mta_sts_for("mx:example.com") == "published"
    with pytest.raises(ValueError):
        Policy.model_validate({"outbound": {"mta_sts": "strict"}})
