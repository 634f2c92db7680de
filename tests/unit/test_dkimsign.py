"""DKIM signing decisions and signatures (pure): which keys sign, the header list, key files, ARC."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from mailmoat_mail.dkimsign import (
    KeyFileError,
    KeyStore,
    LoadedKey,
    arc_seal,
    existing_signatures,
    generate_key,
    header_list,
    read_private_key,
    relaxed_body,
    sign,
    signing_plan,
    split_message,
)
from mailmoat_platform.models import Envelope
from mailmoat_policy import PolicyError, parse_policy

MESSAGE = (b"From: Alice <alice@example.com>\r\nTo: bob@partner.example\r\nSubject: hi\r\n"
           b"Date: Sat, 05 Dec 2026 12:00:00 +0000\r\nMessage-ID: <1@example.com>\r\n"
           b"X-Other: not signed\r\n\r\nbody\r\n")


@pytest.fixture(scope="module")
def keypair() -> dict[str, tuple[bytes, str]]:
    return {"rsa": generate_key("rsa"), "ed25519": generate_key("ed25519")}


def policy_with(tmp_path: Path, keypair: dict[str, tuple[bytes, str]]):  # type: ignore[no-untyped-def]
    for alg, (pem, _) in keypair.items():
        (tmp_path / f"{alg}.key").write_bytes(pem)
    return parse_policy(f"""
accepted_domains: [{{domain: example.com}}]
dkim:
  domains:
    - domain: Example.COM
      keys:
        - {{selector: r1, algorithm: rsa, key_file: {tmp_path}/rsa.key}}
        - {{selector: e1, algorithm: ed25519, key_file: {tmp_path}/ed25519.key}}
""")


def dnsfunc(keypair: dict[str, tuple[bytes, str]]):  # type: ignore[no-untyped-def]
    records = {b"r1._domainkey.example.com.": keypair["rsa"][1].encode(),
               b"e1._domainkey.example.com.": keypair["ed25519"][1].encode()}
    return lambda name, timeout=5: records.get(name if name.endswith(b".") else name + b".")


def test_plan_signs_outbound_mail_of_our_domain_with_every_key(tmp_path: Path, keypair) -> None:
    policy = policy_with(tmp_path, keypair)
    plan = signing_plan(Envelope(direction="outbound"), MESSAGE, policy)
    assert plan.domain == "example.com" and [k.selector for k in plan.keys] == ["r1", "e1"]


@pytest.mark.parametrize(("direction", "data", "reason"), [
    ("inbound", MESSAGE, "not outbound"),
    ("outbound", MESSAGE.replace(b"alice@example.com", b"alice@elsewhere.example"), "has no key"),
    ("outbound", MESSAGE.replace(b"alice@example.com", b"alice@sub.example.com"), "has no key"),
    ("outbound", b"From: a@example.com\r\nFrom: b@example.com\r\n\r\nx\r\n", "no single author"),
    ("outbound", b"Subject: no author\r\n\r\nx\r\n", "no single author"),
])
def test_plan_refuses(tmp_path: Path, keypair, direction: str, data: bytes, reason: str) -> None:
    plan = signing_plan(Envelope(direction=direction), data, policy_with(tmp_path, keypair))
    assert not plan.keys and reason in plan.reason


def test_never_twice_per_domain_and_selector(tmp_path: Path, keypair) -> None:
    policy = policy_with(tmp_path, keypair)
    store = KeyStore()
    rsa_only = [store.key(policy.dkim.domains[0].keys[0])]
    once = sign(MESSAGE, "example.com", rsa_only) + MESSAGE
    assert existing_signatures(split_message(once)[0]) == {("example.com", "r1")}
    plan = signing_plan(Envelope(direction="outbound"), once, policy)
    assert [k.selector for k in plan.keys] == ["e1"]  # the missing one only
    both = sign(once, "example.com", [store.key(plan.keys[0])]) + once
    assert signing_plan(Envelope(direction="outbound"), both, policy).reason == "already signed"


def test_header_list_signs_present_fields_and_oversigns() -> None:
    names = [n.decode() for n in header_list(split_message(MESSAGE)[0])]
    assert names.count("from") == 2 and names.count("subject") == 2 and names.count("cc") == 1
    assert names.count("reply-to") == 0 and "x-other" not in names


def test_signatures_side_by_side_verify_and_break_on_a_body_change(keypair) -> None:
    keys = [LoadedKey("r1", "rsa", read_private_key(keypair["rsa"][0], "rsa")),
            LoadedKey("e1", "ed25519", read_private_key(keypair["ed25519"][0], "ed25519"))]
    signed = sign(MESSAGE, "example.com", keys) + MESSAGE
    verifier = dkim.DKIM(signed)
    assert [verifier.verify(idx=i, dnsfunc=dnsfunc(keypair)) for i in range(2)] == [True, True]
    changed = signed.replace(b"body\r\n", b"body\r\nfooter\r\n")
    for i in range(2):
        with pytest.raises(dkim.ValidationError, match="body hash mismatch"):
            dkim.DKIM(changed).verify(idx=i, dnsfunc=dnsfunc(keypair))


def test_key_files(tmp_path: Path, keypair) -> None:
    store = KeyStore()
    with pytest.raises(KeyFileError, match="cannot read"):
        store.load(str(tmp_path / "missing.key"), "rsa")
    (tmp_path / "ed.key").write_bytes(keypair["ed25519"][0])
    with pytest.raises(KeyFileError, match="not an RSA private key"):
        store.load(str(tmp_path / "ed.key"), "rsa")
    (tmp_path / "seed.key").write_bytes(base64.b64encode(os.urandom(32)) + b"\n")  # dkimpy's dknewkey format
    assert isinstance(store.load(str(tmp_path / "seed.key"), "ed25519"), ed25519.Ed25519PrivateKey)
    # a rotated file is read again
    path = tmp_path / "rot.key"
    path.write_bytes(keypair["rsa"][0])
    first = store.load(str(path), "rsa")
    new_pem, _ = generate_key("rsa")
    path.write_bytes(new_pem)
    os.utime(path, ns=(1, 1))
    assert store.load(str(path), "rsa").private_numbers() != first.private_numbers()


def test_policy_refuses_a_foreign_dkim_domain_and_partial_arc_srs() -> None:
    with pytest.raises(PolicyError, match="not an accepted domain"):
        parse_policy("dkim: {domains: [{domain: other.example, keys: [{selector: s, key_file: /k}]}]}")
    with pytest.raises(PolicyError, match="arc needs"):
        parse_policy("arc: {domain: example.com}")
    with pytest.raises(PolicyError, match="srs needs"):
        parse_policy("srs: {domain: example.com}")
    with pytest.raises(PolicyError, match="not a DKIM selector"):
        parse_policy("accepted_domains: [{domain: e.com}]\n"
                     "dkim: {domains: [{domain: e.com, keys: [{selector: 'a b', key_file: /k}]}]}")


def test_arc_seal_needs_our_authentication_results(keypair) -> None:
    private = read_private_key(keypair["rsa"][0], "rsa")
    assert arc_seal(MESSAGE, "example.com", "r1", private, "gw.example.com") is None
    with_ar = b"Authentication-Results: gw.example.com; spf=pass smtp.mailfrom=partner.example\r\n" + MESSAGE
    sealed = arc_seal(with_ar, "example.com", "r1", private, "gw.example.com")
    assert sealed is not None
    names = [line.split(b":", 1)[0] for line in sealed.split(b"\r\n") if line and not line[:1].isspace()]
    assert sorted(names) == [b"ARC-Authentication-Results", b"ARC-Message-Signature", b"ARC-Seal"]
    cv, _, reason = dkim.arc_verify(sealed + with_ar, dnsfunc=dnsfunc(keypair))
    assert cv == dkim.CV_Pass, reason


@pytest.mark.parametrize("fields", [
    b"From: A <a@example.com>\r\nFrom: B <b@example.org>\r\n",  # two From fields: both must be sealed
    b"From: a@example.com\r\nSubject: one\r\nSubject: two\r\nTo: x@y.example\r\nTo: z@y.example\r\n",
])
def test_an_arc_seal_covers_every_instance_of_a_repeated_field(keypair, fields: bytes) -> None:
    ours = b"Authentication-Results: gw.example.com; spf=pass smtp.mailfrom=partner.example\r\n"
    with_ar = ours + fields + b"\r\nx\r\n"
    sealed = arc_seal(with_ar, "example.com", "r1", read_private_key(keypair["rsa"][0], "rsa"), "gw.example.com")
    assert sealed is not None
    cv, _, reason = dkim.arc_verify(sealed + with_ar, dnsfunc=dnsfunc(keypair))
    assert cv == dkim.CV_Pass, reason


@pytest.mark.parametrize("data", [
    MESSAGE,
    b"From: a@example.com\r\nTo: x@y.example,\r\n\tz@y.example\r\nTo: second@y.example\r\nSubject: folded\r\n"
    b"  continued   subject\r\n\r\n  spaced  body \t \r\n\r\n\r\n",
    b"From: =?utf-8?q?J=C3=B6rg?= <j@example.com>\r\nSubject: \xc3\xa4 8-bit\r\n\r\n",  # empty body, 8-bit header
    b"From: a@example.com\r\nSubject: " + b"long " * 300 + b"\r\n\r\n" + b"line\r\n" * 5000,
    b"From: a@example.com\r\n\r\nno trailing CRLF",
])
def test_signatures_of_awkward_messages_verify(keypair, data: bytes) -> None:
    keys = [LoadedKey("r1", "rsa", read_private_key(keypair["rsa"][0], "rsa")),
            LoadedKey("e1", "ed25519", read_private_key(keypair["ed25519"][0], "ed25519"))]
    signed = sign(data, "example.com", keys) + data
    assert all(len(line) <= 78 for line in signed.split(b"\r\n") if line.startswith((b"DKIM", b" ")))
    verifier = dkim.DKIM(signed)
    assert [verifier.verify(idx=i, dnsfunc=dnsfunc(keypair)) for i in range(2)] == [True, True]


@pytest.mark.parametrize("data", [
    b"From: a@example.com\r\nnot a header line\r\n\r\nbody\r\n",
    b" continuation first\r\nFrom: a@example.com\r\n\r\nbody\r\n",
    b"From: a@example.com\r\nBad Name: x\r\n\r\nbody\r\n",
])
def test_a_header_section_that_does_not_parse_is_not_signed(tmp_path: Path, keypair, data: bytes) -> None:
    assert split_message(data) is None
    plan = signing_plan(Envelope(direction="outbound"), data, policy_with(tmp_path, keypair))
    assert not plan.keys and plan.reason == "the header section does not parse"
    with_ar = data.replace(b"From:", b"Authentication-Results: gw; spf=pass\r\nFrom:", 1)
    assert arc_seal(with_ar, "example.com", "r1", read_private_key(keypair["rsa"][0], "rsa"), "gw") is None


def test_relaxed_body_is_dkimpys() -> None:
    """The fast body canonicalisation gives dkimpy's bytes for every body made of spaces, tabs, CRLFs
    and text (a seeded random walk, plus the corners)."""
    import random

    from dkim.canonicalization import CanonicalizationPolicy

    reference = CanonicalizationPolicy.from_c_value(b"relaxed/relaxed").canonicalize_body
    pieces = [b" ", b"\t", b"\r\n", b"a", b"b", b"  ", b"\r\n\r\n", b" \t "]
    rnd = random.Random(6376)
    bodies = [b"", b"\r\n", b"\r\n\r\n", b"x", b" \r\n", b"x \t\r\n\r\n", b"\t"]
    bodies += [b"".join(rnd.choice(pieces) for _ in range(rnd.randrange(0, 25))) for _ in range(5000)]
    for body in bodies:
        assert relaxed_body(body) == reference(body), body
