"""Connection filter rules (pure): IP sets, policy validation, DNSBL answers, PTR/FCrDNS, HELO, report."""

from __future__ import annotations

import ipaddress
import random
import re

import pytest

from mailmoat_connection_filter.decide import (
    HEADER,
    DnsblResult,
    Lookup,
    Plan,
    PtrFacts,
    conclude,
    dnsbl_query,
    dnsbl_result,
    fold_header,
    helo_facts,
    plan_checks,
    ptr_facts,
    ptr_names,
)
from mailmoat_platform.models import Envelope
from mailmoat_policy import DnsblZone, IpSet, PolicyError, client_address, parse_policy, parse_range

POLICY = """
connection_filter:
  ip_allow: [192.0.2.10, "2001:db8:a::/48"]
  ip_block: [192.0.2.0/24, 203.0.113.0/25, "2001:db8::/32"]
  dnsbl:
    - {zone: bl.test, weight: 3, codes: {127.0.0.2: SBL, 127.0.0.4: XBL}}
    - {zone: Strict.Test., action: reject}
"""


def cf():
    return parse_policy(POLICY).connection_filter


# --- IP sets ------------------------------------------------------------------------------------------


def test_ipset_membership_merges_and_bounds() -> None:
    ips = IpSet.of(["10.0.0.0/24", "10.0.1.0/24", "10.0.0.128/25", "::/128", "2001:db8::/127", "0.0.0.0"])
    assert len(ips) == 4  # the two /24 merge (adjacent), the /25 is inside
    for inside in ("10.0.0.0", "10.0.1.255", "10.0.0.200", "2001:db8::1", "::", "0.0.0.0", "::ffff:10.0.1.3"):
        assert inside in ips, inside
    for outside in ("9.255.255.255", "10.0.2.0", "2001:db8::2", "::1", "0.0.0.1", "nonsense", ""):
        assert outside not in ips, outside
    assert 42 not in ips


def test_ipset_agrees_with_a_linear_scan_on_random_networks() -> None:
    rng = random.Random(7)
    nets = []
    for _ in range(300):
        prefix = rng.randint(8, 32)
        nets.append(ipaddress.ip_network((rng.getrandbits(32), prefix), strict=False))
    ips = IpSet.of(str(n) for n in nets)
    for _ in range(3000):
        address = ipaddress.IPv4Address(rng.getrandbits(32))
        assert (address in ips) == any(address in n for n in nets)
    for net in nets[:50]:
        assert net.network_address in ips and net.broadcast_address in ips


def test_large_block_list_without_size_cap() -> None:
    entries = [f"10.{i // 256}.{i % 256}.0/24" for i in range(20_000)]
    policy = parse_policy("connection_filter:\n  ip_block: [" + ", ".join(entries) + "]\n")
    assert policy.connection_filter.blocked("10.78.31.9")
    assert not policy.connection_filter.blocked("10.78.32.1")


@pytest.mark.parametrize("text", ["1.2.3.256", "1.2.3.4/33", "1.2.3.4/", "01.2.3.4", "1.2.3", "x", "::/129", ""])
def test_parse_range_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_range(text)


def test_parse_range_ignores_host_bits() -> None:
    assert parse_range("10.1.2.3/8") == (4, 10 << 24, (11 << 24) - 1)
    assert parse_range(" 1.2.3.4 ") == (4, 0x01020304, 0x01020304)
    assert parse_range("2001:db8::1/32")[0] == 6


def test_client_address_normalises() -> None:
    assert str(client_address("::ffff:127.0.0.2")) == "127.0.0.2"
    assert str(client_address("[2001:DB8::1]")) == "2001:db8::1"
    assert client_address("x") is None


def test_allow_takes_precedence_over_block() -> None:
    policy = cf()
    assert policy.allowed("192.0.2.10") and not policy.blocked("192.0.2.10")
    assert policy.blocked("192.0.2.11") and not policy.allowed("192.0.2.11")
    assert policy.blocked("2001:db8:b::1") and not policy.blocked("2001:db8:a::1")
    assert policy.blocked("203.0.113.127") and not policy.blocked("203.0.113.128")


def test_policy_defaults_and_normalisation() -> None:
    empty = parse_policy("{}").connection_filter
    assert empty.ptr and empty.helo and empty.dnsbl == [] and not empty.blocked("1.2.3.4")
    zones = cf().dnsbl
    assert [z.zone for z in zones] == ["bl.test", "strict.test"]
    assert zones[0].codes == {"127.0.0.2": "SBL", "127.0.0.4": "XBL"} and zones[1].action == "reject"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("connection_filter:\n  ip_block: [10.0.0.0/8, 300.1.1.1]\n",
         "connection_filter.ip_block: Value error, entry 1: '300.1.1.1' is not an IPv4 or IPv6"),
        ("connection_filter:\n  ip_allow: 10.0.0.0/8\n", "connection_filter.ip_allow"),
        ("connection_filter:\n  dnsbl: [{zone: 'bad zone'}]\n", "connection_filter.dnsbl.0.zone"),
        ("connection_filter:\n  dnsbl: [{zone: bl.test, codes: {SBL: x}}]\n", "return code 'SBL' is not an IPv4"),
        ("connection_filter:\n  dnsbl: [{zone: bl.test, action: drop}]\n", "connection_filter.dnsbl.0.action"),
        ("connection_filter:\n  dnsbl: [{zone: bl.test}, {zone: BL.test.}]\n", "zone 'bl.test' is listed twice"),
        ("connection_filter:\n  timeout: 0\n", "connection_filter.timeout"),
        ("connection_filter:\n  cache_ttl: -1\n", "connection_filter.cache_ttl"),
        ("connection_filter:\n  ptrs: true\n", "connection_filter.ptrs"),
    ],
)
def test_policy_errors_name_the_field(text: str, expected: str) -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy(text, "p.yaml")
    assert expected in str(info.value)


# --- planning -------------------------------------------------------------------------------------------


def test_dnsbl_query_names() -> None:
    assert dnsbl_query("127.0.0.2", "bl.test") == "2.0.0.127.bl.test"
    assert dnsbl_query("::ffff:192.0.2.5", "bl.test") == "5.2.0.192.bl.test"
    assert dnsbl_query("2001:db8::1", "bl.test") == (
        "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl.test"
    )


def test_plan_for_ordinary_allowed_outbound_and_unknown_clients() -> None:
    policy = cf()
    plain = plan_checks(Envelope(client_ip="198.51.100.1", itinerary=["routing"]), policy)
    assert [q for _, q in plain.dnsbl] == ["1.100.51.198.bl.test", "1.100.51.198.strict.test"]
    assert plain.ptr_query == "1.100.51.198.in-addr.arpa" and plain.skipped is None
    allowed = plan_checks(Envelope(client_ip="192.0.2.10"), policy)
    assert allowed.allowed and allowed.dnsbl == () and allowed.skipped == "allow-listed"
    outbound = plan_checks(Envelope(client_ip="198.51.100.1", direction="outbound"), policy)
    assert outbound.dnsbl == () and outbound.skipped == "outbound"
    blocked = plan_checks(Envelope(client_ip="192.0.2.99"), policy)
    assert blocked.blocked and len(blocked.dnsbl) == 2
    none = plan_checks(Envelope(client_ip=""), policy)
    assert none.client_ip == "" and none.dnsbl == () and none.ptr_query is None
    no_ptr = parse_policy("connection_filter: {ptr: false, helo: false}").connection_filter
    quiet = plan_checks(Envelope(client_ip="198.51.100.1"), no_ptr)
    assert quiet.ptr_query is None and not quiet.helo


# --- DNSBL answers --------------------------------------------------------------------------------------

ZONE = DnsblZone(zone="bl.test", weight=3, codes={"127.0.0.2": "SBL"})


@pytest.mark.parametrize(
    ("lookup", "result", "codes", "meanings"),
    [
        (Lookup("nxdomain"), "clean", (), ()),
        (Lookup("nodata"), "clean", (), ()),
        (Lookup("temperror", error="timeout"), "temperror", (), ()),
        (Lookup("ok", ("127.0.0.2",)), "listed", ("127.0.0.2",), ("SBL",)),
        (Lookup("ok", ("127.0.0.10", "127.0.0.2")), "listed", ("127.0.0.2", "127.0.0.10"), ("SBL", "listed")),
        (Lookup("ok", ("127.255.255.254",)), "error", (), ()),
        (Lookup("ok", ("192.0.2.1",)), "error", (), ()),
    ],
)
def test_dnsbl_answers(lookup: Lookup, result: str, codes: tuple, meanings: tuple) -> None:
    out = dnsbl_result(ZONE, lookup)
    assert (out.result, out.codes, out.meanings) == (result, codes, meanings)
    assert out.weight == (3 if result == "listed" else 0)


# --- PTR and FCrDNS -------------------------------------------------------------------------------------


def test_ptr_forward_confirmed() -> None:
    ptr = Lookup("ok", ("Mail.Sender.TEST.", "other.test."))
    forward = {"mail.sender.test": [Lookup("ok", ("127.0.0.9",)), Lookup("nodata")],
               "other.test": [Lookup("ok", ("127.0.0.2",)), Lookup("nodata")]}
    assert ptr_facts("127.0.0.2", ptr, forward) == PtrFacts("pass", ("mail.sender.test", "other.test"), "other.test")


def test_ptr_fail_none_and_temperror() -> None:
    ptr = Lookup("ok", ("a.test.",))
    assert ptr_facts("127.0.0.2", ptr, {"a.test": [Lookup("ok", ("127.0.0.3",)), Lookup("nodata")]}).result == "fail"
    assert ptr_facts("127.0.0.2", ptr, {"a.test": [Lookup("temperror"), Lookup("nodata")]}).result == "temperror"
    assert ptr_facts("127.0.0.2", Lookup("nxdomain"), {}).result == "none"
    assert ptr_facts("127.0.0.2", Lookup("temperror", error="timeout"), {}).result == "temperror"
    ipv6 = ptr_facts("2001:db8::5", ptr, {"a.test": [Lookup("nodata"), Lookup("ok", ("2001:DB8::5",))]})
    assert ipv6.result == "pass"


def test_ptr_names_bounded_and_deduplicated() -> None:
    lookup = Lookup("ok", ("a.test.", "A.test.", "b.test.", "c.test.", "d.test."))
    assert ptr_names(lookup) == ("a.test", "b.test", "c.test")
    assert ptr_names(Lookup("nxdomain")) == () and ptr_names(None) == ()


# --- HELO -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("helo", "syntax", "literal", "matches_ptr"),
    [
        (None, "missing", None, None),
        ("  ", "missing", None, None),
        ("mail.sender.test", "fqdn", None, True),
        ("MAIL.sender.test.", "fqdn", None, True),
        ("other.sender.test", "fqdn", None, False),
        ("localhost", "non-fqdn", None, False),
        ("[127.0.0.2]", "literal", "match", None),
        ("[127.0.0.3]", "literal", "mismatch", None),
        ("[IPv6:::1]", "literal", "mismatch", None),
        ("[::1]", "invalid", None, None),
        ("[300.1.1.1]", "invalid", None, None),
        ("127.0.0.2", "bare-ip", "match", None),
        ("bad_host!.test", "invalid", None, None),
        ("-dash.test", "invalid", None, None),
        ("a" * 64 + ".test", "invalid", None, None),
    ],
)
def test_helo(helo: str | None, syntax: str, literal: str | None, matches_ptr: bool | None) -> None:
    facts = helo_facts(helo, "127.0.0.2", ("mail.sender.test",))
    assert (facts.syntax, facts.literal, facts.matches_ptr) == (syntax, literal, matches_ptr)


def test_helo_without_ptr_names_does_not_compare() -> None:
    assert helo_facts("mail.sender.test", "127.0.0.2").matches_ptr is None
    assert helo_facts("[IPv6:2001:db8::1]", "2001:db8::1").literal == "match"


# --- verdict and header ---------------------------------------------------------------------------------

LISTED = DnsblResult("bl.test", "listed", ("127.0.0.2",), ("SBL",), 3.0, "annotate")


def test_allow_listed_verdict_is_cal_with_scl_minus_one() -> None:
    report = conclude(Plan("192.0.2.10", allowed=True, skipped="allow-listed"), [], None, None)
    verdict = report.verdict()
    assert verdict.stage == "connection_filter" and verdict.result == "allow"
    assert verdict.detail["ipv"] == "CAL" and verdict.detail["scl"] == -1
    assert verdict.detail["dnsbl_skipped"] == "allow-listed"
    assert b"IPV:CAL;SCL:-1;ACT:allow" in report.header()


def test_listed_annotate_reject_and_block_verdicts() -> None:
    plan = Plan("127.0.0.2")
    listed = conclude(plan, [LISTED, DnsblResult("ok.test", "clean")], None, None).verdict()
    assert listed.result == "listed" and listed.detail["ipv"] == "DNSBL" and listed.detail["dnsbl_score"] == 3.0
    assert listed.detail["dnsbl"][0] == {"zone": "bl.test", "result": "listed", "action": "annotate",
                                         "codes": ["127.0.0.2"], "meanings": ["SBL"], "weight": 3.0}
    rejecting = DnsblResult("strict.test", "listed", ("127.0.0.2",), ("listed",), 1.0, "reject")
    rejected = conclude(plan, [LISTED, rejecting], None, None).verdict()
    assert rejected.result == "reject" and rejected.detail["reason"] == "dnsbl"
    blocked = conclude(Plan("192.0.2.99", blocked=True), [], None, None).verdict()
    assert blocked.result == "reject" and blocked.detail["reason"] == "ip_block" and blocked.detail["ipv"] == "BLK"
    clean = conclude(plan, [DnsblResult("bl.test", "clean")], None, None).verdict()
    assert clean.result == "pass" and clean.detail["ipv"] == "NLI" and "scl" not in clean.detail


def test_temperror_is_annotated_and_passes() -> None:
    report = conclude(Plan("127.0.0.2"), [DnsblResult("slow.test", "temperror", error="timeout")],
                      PtrFacts("temperror"), None)
    verdict = report.verdict()
    assert verdict.result == "pass" and verdict.detail["temperror"] == ["dnsbl:slow.test", "ptr"]
    assert b"DNSBL:slow.test=temperror" in report.header() and b"TEMPERROR:dnsbl:slow.test,ptr" in report.header()


def test_header_is_folded_ascii_and_sanitised() -> None:
    helo = helo_facts("evil;name\r\nX-Injected: 1", "127.0.0.2")
    report = conclude(Plan("127.0.0.2"), [LISTED, LISTED, LISTED], PtrFacts("pass", ("mail.sender.test",)), helo)
    header = report.header()
    assert header.startswith(HEADER + b": CIP:127.0.0.2;") and header.endswith(b"\r\n")
    lines = header[:-2].split(b"\r\n")
    assert len(lines) > 1 and all(len(line) <= 78 for line in lines)
    assert all(line.startswith(b"\t") for line in lines[1:])
    assert b"\r\nX-Injected" not in header
    assert not re.search(rb"[^\x20-\x7e\t\r\n]", header)
    unfolded = header.replace(b"\r\n\t", b"").decode()
    assert "H:evil?name??X-Injected:_1" in unfolded and "FCRDNS:pass" in unfolded and "PTR:mail.sender.test" in unfolded


def test_fold_keeps_a_long_token_whole() -> None:
    header = fold_header(b"X-Test", ["A:" + "x" * 100, "B:1"])
    assert header == b"X-Test: A:" + b"x" * 100 + b";\r\n\tB:1\r\n"
