"""Outbound DKIM signing and ARC sealing on arbitrary message bytes (as ingress accepts them: CRLF lines
only): a message the signer takes (its header section parses) gets signatures that an independent verifier
(dkimpy) finds valid, one RSA and one Ed25519, and a message without an ARC chain gets a seal that
validates — a receiver must be able to verify what the gateway signs."""

from __future__ import annotations

import dkim

from mailmoat_mail.dkimsign import LoadedKey, arc_seal, generate_key, read_private_key, sign, split_message

_RSA_PEM, _RSA_TXT = generate_key("rsa", 1024)
_ED_PEM, _ED_TXT = generate_key("ed25519")
KEYS = [LoadedKey("r", "rsa", read_private_key(_RSA_PEM, "rsa")),
        LoadedKey("e", "ed25519", read_private_key(_ED_PEM, "ed25519"))]
RECORDS = {b"r._domainkey.example.com.": _RSA_TXT.encode(), b"e._domainkey.example.com.": _ED_TXT.encode()}


def _dns(name: bytes, timeout: int = 5) -> bytes | None:
    return RECORDS.get(name)


def crlf(data: bytes) -> bytes:
    """Every line ending as CRLF (ingress refuses bare CR and LF)."""
    return data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")


def test_one_input(data: bytes) -> None:
    message = crlf(data)
    parsed = split_message(message)
    if parsed is None:
        return
    signed = sign(message, "example.com", KEYS, now=1_700_000_000) + message
    verifier = dkim.DKIM(signed, minkey=1024)
    for index in (0, 1):
        assert verifier.verify(idx=index, dnsfunc=_dns), (index, message[:300])
    if b"\narc-" in b"\n" + message.lower():
        return
    ours = b"Authentication-Results: gw.example.com; spf=pass smtp.mailfrom=example.com\r\n" + message
    try:
        seal = arc_seal(ours, "example.com", "r", KEYS[0].private, "gw.example.com")
    except dkim.ParameterError:  # no From field to seal: routing leaves such a message unsealed and says so
        assert not any(name.lower() == b"from" for name, _ in parsed[0]), message[:300]
        return
    assert seal is not None, message[:300]
    cv, _results, reason = dkim.arc_verify(seal + ours, dnsfunc=_dns)
    assert cv == dkim.CV_Pass, (cv, reason, message[:300])


def seeds() -> list[bytes]:
    from tests.support.hostile import cases

    return [case.data for case in cases()] + [
        b"From: a@example.com\r\nSubject: x\r\n\r\nbody \t \r\n\r\n\r\n",
        b"From: a@example.com\r\nSubject:\r\n  folded\r\n\tagain\r\n\r\n",
        b"From: a@example.com\r\n\r\n",
        b"From: a@example.com",
    ]
