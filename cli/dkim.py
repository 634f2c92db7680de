"""``mailmoat dkim keygen DOMAIN SELECTOR [--algorithm rsa|ed25519] [--dir DIR]``: a signing key and its DNS record.

The private key is written to ``DIR/DOMAIN.SELECTOR.key`` (mode 0600; an existing file is never
overwritten, so a key in use cannot be lost by a typo); the TXT record to publish at
``SELECTOR._domainkey.DOMAIN`` is printed as a zone-file line, followed by the ``dkim`` policy entry
that uses the key (docs/policy.md, ``dkim``: rotation with two selectors).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

_LABEL = re.compile(r"^(?!-)[A-Za-z0-9_-]{1,63}(?<!-)$")


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    dk = sub.add_parser("dkim", help="DKIM signing keys")
    dk_sub = dk.add_subparsers(dest="dkim_command", required=True)
    gen = dk_sub.add_parser("keygen", help="write a new signing key and print its DNS TXT record")
    gen.add_argument("domain")
    gen.add_argument("selector")
    gen.add_argument("--algorithm", choices=["rsa", "ed25519"], default="rsa")
    gen.add_argument("--bits", type=int, default=2048, help="RSA key size (default 2048; at least 1024)")
    gen.add_argument("--dir", default=".", help="where the key file goes (default: the current directory)")


def _names_ok(domain: str, selector: str) -> str | None:
    labels = domain.rstrip(".").split(".")
    if len(labels) < 2 or not all(_LABEL.match(x) for x in labels):
        return f"{domain!r} is not a domain name"
    if not all(_LABEL.match(x) for x in selector.split(".")):
        return f"{selector!r} is not a selector (DNS labels)"
    return None


def keygen(domain: str, selector: str, algorithm: str, bits: int, directory: str) -> int:
    from mailmoat_mail.dkimsign import generate_key, txt_record  # cryptography and dkimpy: only here

    domain, selector = domain.lower().rstrip("."), selector.lower()
    problem = _names_ok(domain, selector)
    if problem is None and algorithm == "rsa" and bits < 1024:
        problem = "RSA keys shorter than 1024 bits are not accepted by verifiers (RFC 8301); use 2048"
    if problem is not None:
        print(f"mailmoat: {problem}", file=sys.stderr)
        return 2
    path = Path(directory) / f"{domain}.{selector}.key"
    pem, record = generate_key(algorithm, bits)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        print(f"mailmoat: {path} exists; not overwriting a key (choose a new selector)", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"mailmoat: cannot write {path}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    print(f"; private key written to {path}")
    print("; publish this record, then add the key to the policy once DNS answers with it:")
    print(txt_record(f"{selector}._domainkey.{domain}", record))
    print("; policy (dkim.domains):")
    print(f";   - domain: {domain}")
    print(";     keys:")
    print(f";       - {{selector: {selector}, algorithm: {algorithm}, key_file: {path.resolve()}}}")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.dkim_command == "keygen":
        return keygen(args.domain, args.selector, args.algorithm, args.bits, args.dir)
    return 2


__all__ = ["add_parser", "keygen", "run"]
