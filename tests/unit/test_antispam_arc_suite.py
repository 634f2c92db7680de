"""The ARC validation test suite (ValiMail arc_test_suite, draft-ietf-dmarc-arc-protocol-18, 175 scenarios,
tests/data/arc/) against our ARC verification, each scenario's keys served as a record table through the
resolver interface. ``verify_arc`` is called as ``authenticate`` calls it (the default minimum key size)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dkim
import pytest
import yaml

from mailmoat_antispam.auth import authenticate
from mailmoat_antispam.auth.dkimverify import verify_arc
from mailmoat_platform.models import Envelope
from mailmoat_policy import Policy
from tests.support.dkimkeys import make_key
from tests.support.spfsuite import TableResolver

SUITE = Path(__file__).resolve().parent.parent / "data" / "arc" / "arc-draft-validation-tests.yml"

CV = {"None": "none", "Pass": "pass", "Fail": "fail"}
"""The suite's ``cv`` and the chain validation status (RFC 8617 4.4) it stands for."""

_SEAL_SAYS_FAIL = ("fail", "The suite expects an empty cv (its runner printed nothing for dkimpy's None, "
                   "'the chain is terminated'); RFC 8617 5.2 (and draft-18 5.2) make a chain with a "
                   "cv=fail seal 'fail': step 2 for the newest seal, step 3.3 for any seal.")

EXCEPTIONS: dict[str, tuple[str, str]] = {
    "cv_fail_i1_as_cv_fail": _SEAL_SAYS_FAIL,
    "cv_fail_i2_as2_fail": _SEAL_SAYS_FAIL,
    "cv_fail_i2_as1_fail": _SEAL_SAYS_FAIL,
}
"""Scenarios whose ``cv`` is not the status we give: scenario name -> (our status, why)."""


@dataclass(frozen=True)
class ArcCase:
    scenario: str
    name: str
    id: str
    message: bytes
    cv: str
    """The suite's value as written."""
    zone: dict[str, list[Any]]


class _Loader(yaml.SafeLoader):
    """Mappings as lists of pairs: 'Arc Seal Fields' names four scenarios twice (a dict, as the suite's
    runner loads it, keeps only the second of each), and every scenario is run here."""


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, lambda loader, node: [
    (loader.construct_object(k, deep=True), loader.construct_object(v, deep=True)) for k, v in node.value])


def load_cases(path: Path = SUITE) -> list[ArcCase]:
    cases: list[ArcCase] = []
    seen: dict[str, int] = {}
    with path.open("rb") as handle:
        for pairs in yaml.load_all(handle, Loader=_Loader):
            document = dict(pairs)
            zone = {name.lower(): [("TXT", [text])] for name, text in document["txt-records"]}
            for name, pairs_of_test in document["tests"]:
                test = dict(pairs_of_test)
                seen[name] = seen.get(name, 0) + 1
                case_id = name if seen[name] == 1 else f"{name}-{seen[name]}"
                # The suite's messages have LF line ends; its runners hand them to dkimpy as they are, which
                # reads each line as ending in CRLF. Ingress only accepts CRLF: the same lines, each with CRLF.
                message = test["message"].replace("\n", "\r\n").encode("utf-8")
                cases.append(ArcCase(document["description"], name, case_id, message, test["cv"], zone))
    return cases


CASES = load_cases()


def expected(case: ArcCase) -> str:
    if case.name in EXCEPTIONS:
        return EXCEPTIONS[case.name][0]
    return CV[case.cv]


def test_the_whole_suite_is_loaded() -> None:
    assert len(CASES) == 175
    assert len({c.id for c in CASES}) == 175


def test_each_exception_names_a_scenario_whose_cv_we_do_not_give() -> None:
    by_name = {c.name: c for c in CASES}
    for name, (status, _) in EXCEPTIONS.items():
        assert name in by_name, name
        assert CV.get(by_name[name].cv) != status, name


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_arc_validation(case: ArcCase) -> None:
    result = await verify_arc(case.message, TableResolver(case.zone))
    assert result.result == expected(case), result.reason


async def test_the_512_bit_key_fails_for_its_size() -> None:
    """as_fields_b_512 agrees because the gateway refuses RSA keys under 1,024 bits (RFC 8301 3.2), not
    because the seal is bad: with that limit lowered the same chain passes."""
    [case] = [c for c in CASES if c.name == "as_fields_b_512"]
    assert (await verify_arc(case.message, TableResolver(case.zone))).result == "fail"
    assert (await verify_arc(case.message, TableResolver(case.zone), minkey=512)).result == "pass"


# Beyond the suite: the sealers and the newest ARC-Authentication-Results we report are read from the ARC
# fields by their instance; dkimpy finds a field's instance as the first "i=<digits>" anywhere in it. A
# field whose instance the two read differently must fail the chain, else a field dkimpy never validated
# could name the newest sealer (and the trusted-sealer override of a DMARC failure would follow it).

SPOOF = (b"Authentication-Results: own.test; dmarc=pass header.from=bank.test\r\n"
         b"From: <ceo@bank.test>\r\nTo: a@ours.test\r\nSubject: pay\r\n\r\nWire the money today.\r\n")
ZONE = {"bank.test": [("TXT", ["v=spf1 ip4:198.51.100.0/24 -all"])],
        "_dmarc.bank.test": [("TXT", ["v=DMARC1; p=reject"])],
        "evil.test": [("TXT", ["v=spf1 ip4:203.0.113.0/24 -all"])]}
ENVELOPE = Envelope(client_ip="203.0.113.5", mail_from="x@evil.test", helo="mail.evil.test", rcpt_to=["a@ours.test"],
                    id="m1", direction="inbound")
POLICY = Policy.model_validate({"organization": {"hostname": "mx.ours.test"},
                                "accepted_domains": [{"domain": "ours.test"}],
                                "antispam": {"trusted_arc_sealers": ["trusted.test"]}})


@pytest.fixture(scope="module")
def own_chain() -> tuple[bytes, dict[str, list[Any]]]:
    """A p=reject spoof of bank.test in a valid ARC chain of one set, sealed by the sender's own domain."""
    key = make_key(1024)
    arc_set = b"".join(dkim.arc_sign(SPOOF, b"s", b"own.test", key.private_pem, b"own.test"))
    return arc_set + SPOOF, {**ZONE, "s._domainkey.own.test": [("TXT", [key.record])]}


async def test_the_spoof_alone_is_not_overridden(own_chain: tuple[bytes, dict[str, list[Any]]]) -> None:
    message, zone = own_chain
    assert (await verify_arc(message, TableResolver(zone))).sealers == ("own.test",)
    result = await authenticate(ENVELOPE, message, TableResolver(zone), POLICY)
    assert (result.dmarc.effective, result.compauth.result) == ("reject", "fail")


@pytest.mark.parametrize("instance", ["i=+1", "i=\u0661", "i=\uff11", "i=1_0", "i=0; zi=1", "i=01x", "i=51",
                                      "i=1; x= i=2"])
@pytest.mark.parametrize("name", ["ARC-Seal", "ARC-Message-Signature"])
async def test_an_arc_field_whose_instance_is_read_two_ways_fails_the_chain(
        own_chain: tuple[bytes, dict[str, list[Any]]], instance: str, name: str) -> None:
    message, zone = own_chain
    forged = f"{name}: {instance}; a=rsa-sha256; cv=none; d=trusted.test; s=x; b=AAAA\r\n".encode()
    message = message.replace(b"Subject:", forged + b"Subject:")
    arc = await verify_arc(message, TableResolver(zone))
    assert arc.result == "fail", arc
    result = await authenticate(ENVELOPE, message, TableResolver(zone), POLICY)
    assert (result.dmarc.effective, result.dmarc.override, result.compauth.result) == ("reject", "", "fail")


@pytest.mark.parametrize("value", ["i=\u0661; trusted.test; dmarc=pass", "i=1x; trusted.test; dmarc=pass",
                                   "trusted.test; i=1; dmarc=pass"])
async def test_an_arc_authentication_results_whose_instance_is_read_two_ways_fails_the_chain(
        own_chain: tuple[bytes, dict[str, list[Any]]], value: str) -> None:
    message, zone = own_chain
    message = message.replace(b"Subject:", f"ARC-Authentication-Results: {value}\r\nSubject:".encode())
    assert (await verify_arc(message, TableResolver(zone))).result == "fail"
