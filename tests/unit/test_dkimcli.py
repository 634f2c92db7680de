"""``mailmoat dkim keygen``: the key file, the TXT record, and what it refuses."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from mailmoat_cli.main import main
from mailmoat_mail.dkimsign import read_private_key


@pytest.mark.parametrize(("algorithm", "kind", "public_len"), [("rsa", rsa.RSAPrivateKey, 294),
                                                               ("ed25519", ed25519.Ed25519PrivateKey, 32)])
def test_keygen_writes_a_private_key_and_prints_its_record(tmp_path: Path, capsys, algorithm: str, kind: type,
                                                           public_len: int) -> None:
    assert main(["dkim", "keygen", "Example.COM", "sel1", "--algorithm", algorithm, "--dir", str(tmp_path)]) == 0
    path = tmp_path / "example.com.sel1.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = read_private_key(path.read_bytes(), algorithm)
    assert isinstance(key, kind)
    if isinstance(key, rsa.RSAPrivateKey):
        assert key.key_size == 2048
    out = capsys.readouterr().out
    (line,) = [x for x in out.splitlines() if " IN TXT " in x]
    assert line.startswith("sel1._domainkey.example.com. 3600 IN TXT (")
    record = "".join(part for part in line.split('"')[1::2])
    assert record.startswith(f"v=DKIM1; k={algorithm}; p=")
    assert len(base64.b64decode(record.split("p=")[1])) == public_len
    assert all(len(part) <= 255 for part in line.split('"')[1::2])


def test_keygen_never_overwrites_and_refuses_bad_names(tmp_path: Path, capsys) -> None:
    args = ["dkim", "keygen", "example.com", "sel1", "--dir", str(tmp_path)]
    assert main(args) == 0
    before = (tmp_path / "example.com.sel1.key").read_bytes()
    assert main(args) == 1
    assert (tmp_path / "example.com.sel1.key").read_bytes() == before
    assert "not overwriting" in capsys.readouterr().err
    assert main(["dkim", "keygen", "not a domain", "sel1", "--dir", str(tmp_path)]) == 2
    assert main(["dkim", "keygen", "example.com", "../x", "--dir", str(tmp_path)]) == 2
    assert main(["dkim", "keygen", "example.com", "small", "--bits", "512", "--dir", str(tmp_path)]) == 2
