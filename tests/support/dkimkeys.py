"""DKIM/ARC signing keys made by the test suite: an RSA key and the TXT record that publishes it."""

from __future__ import annotations

import base64
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


@dataclass(frozen=True)
class SigningKey:
    private_pem: bytes
    """PKCS#1 PEM, as dkimpy's sign() and arc_sign() take it."""
    record: str
    """The key record for ``<selector>._domainkey.<domain>`` TXT."""


def make_key(bits: int = 2048) -> SigningKey:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return SigningKey(private, f"v=DKIM1; k=rsa; p={base64.b64encode(public).decode('ascii')}")


def txt_zone(name: str, record: str) -> str:
    """A zone line for a long TXT record, split into character-strings of at most 255 octets."""
    chunks = " ".join(f'"{record[i:i + 250]}"' for i in range(0, len(record), 250))
    return f"{name.rstrip('.')}. 60 IN TXT {chunks}"


__all__ = ["SigningKey", "make_key", "txt_zone"]
