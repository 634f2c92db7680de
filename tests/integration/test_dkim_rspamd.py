"""Our DKIM signatures checked by a second, independent verifier: a real Rspamd (its dkim module,
C canonicalisation of its own) finds both the RSA-2048 and the Ed25519 signature valid, and neither
after the body changed."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailmoat_mail.dkimsign import LoadedKey, generate_key, read_private_key, sign
from tests.support.dkimkeys import txt_zone
from tests.support.dnsserver import DnsServer
from tests.support.rspamd import RspamdServer, rspamd_binary

RSA_PEM, RSA_RECORD = generate_key("rsa")
ED_PEM, ED_RECORD = generate_key("ed25519")
KEYS = [LoadedKey("rsa2026a", "rsa", read_private_key(RSA_PEM, "rsa")),
        LoadedKey("ed2026a", "ed25519", read_private_key(ED_PEM, "ed25519"))]
MESSAGE = (b"From: Alice <alice@example.com>\r\nTo: Bob <bob@partner.example>,\r\n\tCarol <carol@partner.example>\r\n"
           b"Subject: the   quarterly figures\r\nDate: Sat, 05 Dec 2026 12:00:00 +0000\r\n"
           b"Message-ID: <q4@example.com>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
           b"Content-Transfer-Encoding: 8bit\r\n\r\nHello Bob,  \t\r\n\r\nthe figures: \xc3\xbcber \r\n\r\n\r\n")


@pytest.fixture(scope="module")
def rspamd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RspamdServer]:
    if rspamd_binary() is None:
        pytest.skip("rspamd is not installed (apt-get install rspamd; scripts/setup.sh --test)")
    zone = "\n".join([txt_zone("rsa2026a._domainkey.example.com", RSA_RECORD),
                      txt_zone("ed2026a._domainkey.example.com", ED_RECORD)])
    with DnsServer(zone) as dns, RspamdServer(Path(tmp_path_factory.mktemp("rspamd")), dns_port=dns.port) as server:
        yield server


def dkim_symbols(rspamd: RspamdServer, data: bytes) -> dict[str, list[str]]:
    request = urllib.request.Request(rspamd.url + "/checkv2", data=data, method="POST",
                                     headers={"IP": "192.0.2.1", "From": "alice@example.com"})  # not local: checked
    with urllib.request.urlopen(request, timeout=30) as response:
        symbols = json.load(response)["symbols"]
    return {name: sorted(s.get("options") or []) for name, s in symbols.items() if "DKIM" in name}


def test_rspamd_finds_both_signatures_valid(rspamd: RspamdServer) -> None:
    signed = sign(MESSAGE, "example.com", KEYS) + MESSAGE
    found = dkim_symbols(rspamd, signed)
    assert found.get("R_DKIM_ALLOW") == ["example.com:s=ed2026a", "example.com:s=rsa2026a"], found
    assert "R_DKIM_REJECT" not in found


def test_rspamd_rejects_both_after_a_change(rspamd: RspamdServer) -> None:
    signed = sign(MESSAGE, "example.com", KEYS) + MESSAGE
    found = dkim_symbols(rspamd, signed.replace(b"the figures", b"the numbers"))
    assert found.get("R_DKIM_REJECT") == ["example.com:s=ed2026a", "example.com:s=rsa2026a"], found
    assert "R_DKIM_ALLOW" not in found
