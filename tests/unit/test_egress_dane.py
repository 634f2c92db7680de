"""DANE (RFC 7672): matching (DANE-EE by certificate or key with every matching type, DANE-TA with
the name and the chain checked, unusable usages ignored), the plan applied to targets, the TLS-RPT
results and the policy fields."""

from __future__ import annotations

import datetime

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from mailmoat_egress.dane import DaneCheck, Tlsa, check_chain, parse_tlsa, tlsa_for, usable
from mailmoat_egress.danedelivery import DanePlan, session_result
from mailmoat_egress.delivery import Target, destination_for, make_result
from mailmoat_egress.targets import NoRoute
from mailmoat_policy import Dane, resolver_address

MX = "mx.dane.test"


def self_signed(name: str = "whatever.invalid", *, expired: bool = False) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    start, end = (now - datetime.timedelta(days=30), now - datetime.timedelta(days=1)) if expired else (
        now - datetime.timedelta(days=1), now + datetime.timedelta(days=30))
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
            .sign(key, hashes.SHA256()))


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(Encoding.DER)


def ca_chain(name: str) -> tuple[x509.Certificate, list[bytes]]:
    """A trustme CA and the chain a server sends: its leaf for ``name`` and the CA."""
    ca = trustme.CA()
    leaf = ca.issue_cert(name)
    root = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
    leaf_cert = x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes())
    return root, [der(leaf_cert), der(root)]


@pytest.mark.parametrize("selector", [0, 1])
@pytest.mark.parametrize("mtype", [0, 1, 2])
def test_dane_ee_matches_a_self_signed_certificate_with_any_name_and_even_expired(selector: int, mtype: int) -> None:
    cert = self_signed(expired=True)
    assert check_chain([tlsa_for(cert, 3, selector, mtype)], [der(cert)], [MX]) is None


@pytest.mark.parametrize("selector", [0, 1])
@pytest.mark.parametrize("mtype", [0, 1, 2])
def test_dane_ee_refuses_another_certificate(selector: int, mtype: int) -> None:
    pinned, presented = self_signed(), self_signed()
    assert check_chain([tlsa_for(pinned, 3, selector, mtype)], [der(presented)], [MX]) == (
        "no TLSA record matches the server's certificate chain")


def test_one_matching_record_among_several_is_enough() -> None:
    cert = self_signed()
    records = [tlsa_for(self_signed(), 3, 1, 1), tlsa_for(cert, 3, 1, 2)]
    assert check_chain(records, [der(cert)], [MX]) is None


@pytest.mark.parametrize("selector", [0, 1])
def test_dane_ta_matches_the_ca_the_server_sends_when_the_leaf_names_the_mx(selector: int) -> None:
    root, chain = ca_chain(MX)
    assert check_chain([tlsa_for(root, 2, selector, 1)], chain, [MX, "dane.test"]) is None


def test_dane_ta_accepts_the_destination_domain_as_the_name() -> None:
    root, chain = ca_chain("dane.test")
    assert check_chain([tlsa_for(root, 2, 1, 1)], chain, [MX, "dane.test"]) is None


def test_dane_ta_refuses_a_leaf_for_another_name() -> None:
    root, chain = ca_chain("other.test")
    reason = check_chain([tlsa_for(root, 2, 1, 1)], chain, [MX, "dane.test"])
    assert reason is not None and "does not chain" in reason


def test_dane_ta_refuses_a_leaf_of_another_ca_sent_with_the_pinned_ca() -> None:
    root, _ = ca_chain(MX)
    _, other_chain = ca_chain(MX)
    assert check_chain([tlsa_for(root, 2, 1, 1)], [other_chain[0], der(root)], [MX]) is not None


def test_dane_ta_does_not_match_the_leaf_itself() -> None:
    cert = self_signed(MX)
    assert check_chain([tlsa_for(cert, 2, 0, 1)], [der(cert)], [MX]) is not None


def test_pkix_usages_and_unknown_types_are_unusable() -> None:
    cert = self_signed()
    records = [tlsa_for(cert, 0, 0, 1), tlsa_for(cert, 1, 1, 1), Tlsa(3, 2, 1, b"x"), Tlsa(3, 1, 3, b"x")]
    assert usable(records) == ()
    assert check_chain(records, [der(cert)], [MX]) == "no usable TLSA record"


def test_parse_tlsa_presentation_form() -> None:
    record = parse_tlsa("3 1 1 0A0B 0c0d")
    assert record == Tlsa(3, 1, 1, bytes.fromhex("0a0b0c0d")) and record.text() == "3 1 1 0a0b0c0d"
    with pytest.raises(ValueError):
        parse_tlsa("3 1 1")


def test_no_certificate_or_garbage_is_a_mismatch() -> None:
    record = tlsa_for(self_signed(), 3, 1, 1)
    assert check_chain([record], [], [MX]) == "the server sent no certificate"
    assert check_chain([record], [b"junk"], [MX]) is not None


# --- the plan applied to targets, the TLS mode per target, the TLS-RPT result -----------------------

PINNED = DaneCheck((Tlsa(3, 1, 1, b"x" * 32),), (MX, "dane.test"))


def test_plan_gives_each_target_its_hosts_check_and_refuses_hosts_outside_the_validated_mx() -> None:
    plan = DanePlan("dane.test", {MX: PINNED}, (MX, "mx2.dane.test"))
    targets = plan.apply([Target("127.0.0.1", 25, MX), Target("127.0.0.2", 25, "mx2.dane.test"),
                          Target("127.0.0.3", 25, "forged.example")])
    assert targets[0].dane == PINNED
    assert targets[1].dane is None, "a validated MX host without TLSA records: as without DANE"
    assert targets[2].dane is not None and "DNSSEC-validated" in str(targets[2].dane.error)


def test_an_inactive_plan_leaves_targets_alone_and_a_failed_mx_look_up_defers() -> None:
    targets = [Target("127.0.0.1", 25, MX)]
    assert DanePlan("dane.test").apply(targets) == targets
    with pytest.raises(NoRoute) as caught:
        DanePlan("dane.test", error="DNSSEC MX look-up failed: SERVFAIL").apply(targets)
    assert caught.value.code == 451 and caught.value.message.startswith("4.7.5")


def test_a_dane_target_overrides_the_routes_tls_mode_and_name() -> None:
    destination = destination_for(Target("127.0.0.1", 25, MX, PINNED), "opportunistic", "route.name")
    assert (destination.tls, destination.tls_name, destination.dane) == ("dane", MX, PINNED)
    unusable = destination_for(Target("127.0.0.1", 25, MX, DaneCheck((), (MX,))), "none", None)
    assert unusable.tls == "required", "TLSA records none usable: TLS without authentication, never clear text"
    plain = destination_for(Target("127.0.0.1", 25, MX), "opportunistic", None)
    assert (plain.tls, plain.dane) == ("opportunistic", None)


def test_tls_rpt_results_under_dane() -> None:
    plan = DanePlan("dane.test", {MX: PINNED}, (MX,))
    ok = make_result("a@dane.test", 250, "2.0.0 ok", MX, "TLSv1.3")
    assert session_result(plan, ok) == "successful"
    assert session_result(plan, make_result("a@dane.test", 421, f"4.7.5 TLS with {MX} failed DANE: no")) == (
        "tlsa-invalid")
    assert session_result(plan, make_result("a@dane.test", 421, f"4.7.5 {MX}: TLSA look-up failed: x")) == (
        "dnssec-invalid")
    assert session_result(plan, make_result("a@dane.test", 421, "4.7.4 TLS is required, but was not offered")) == (
        "starttls-not-supported")
    assert session_result(plan, make_result("a@dane.test", 421, "4.4.1 cannot connect")) is None
    assert session_result(DanePlan("plain.test"), ok) is None, "no DANE, nothing counted under tlsa"


def test_policy_dane_needs_a_resolver_address_when_on() -> None:
    assert Dane().mode == "off"
    assert Dane(mode="opportunistic", resolver="127.0.0.1").resolver == "127.0.0.1:53"
    assert resolver_address("[::1]:5353") == ("::1", 5353)
    with pytest.raises(ValueError):
        Dane(mode="opportunistic")
    with pytest.raises(ValueError):
        Dane(mode="opportunistic", resolver="unbound.local:53")
