"""The TLS mode table: every mode maps to explicit STARTTLS behaviour and certificate checks."""

from __future__ import annotations

import ssl
import typing

import pytest

from mailmoat_egress.tls import CA_FILE_ENV, TLS_RULES, ca_file, connect_kwargs, rule_for, server_name, ssl_context
from mailmoat_platform.models import TlsMode

# mode: (starttls, verify_mode, check_hostname) — None: no TLS context at all
TABLE = {
    "none": ("never", None, None),
    "opportunistic": ("if_offered", ssl.CERT_NONE, False),
    "required": ("must", ssl.CERT_NONE, False),
    "verify-ca": ("must", ssl.CERT_REQUIRED, False),
    "verify": ("must", ssl.CERT_REQUIRED, True),
    # internal (MTA-STS testing), not a policy mode: verified, falling back to unverified TLS in the pool
    "sts-testing": ("if_offered", ssl.CERT_REQUIRED, True),
    # internal (DANE): TLS or nothing, the chain matched against TLSA records after the handshake
    "dane": ("must", ssl.CERT_NONE, False),
}


def test_table_covers_every_mode() -> None:
    assert set(TLS_RULES) == set(typing.get_args(TlsMode)) | {"sts-testing", "dane"} == set(TABLE)


@pytest.mark.parametrize("mode", list(TABLE))
def test_mode_row(mode: str) -> None:
    starttls, verify_mode, check_hostname = TABLE[mode]
    assert rule_for(mode).starttls == starttls
    kwargs = connect_kwargs(mode)
    assert kwargs["start_tls"] is False, "automatic STARTTLS (None) could silently stay in clear text"
    assert kwargs["use_tls"] is False
    context = kwargs["tls_context"]
    if verify_mode is None:
        assert context is None
        assert kwargs["validate_certs"] is False
    else:
        assert isinstance(context, ssl.SSLContext)
        assert context.verify_mode == verify_mode
        assert context.check_hostname is check_hostname
        assert kwargs["validate_certs"] is (verify_mode == ssl.CERT_REQUIRED)
        assert context.minimum_version == ssl.TLSVersion.TLSv1_2


def test_unknown_mode_refused() -> None:
    with pytest.raises(ValueError):
        rule_for("sometimes")


def test_ca_file_loaded(tmp_path, monkeypatch) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    monkeypatch.setenv(CA_FILE_ENV, str(path))
    assert ca_file() == str(path)
    context = ssl_context("verify", ca_file())
    assert context is not None
    subjects = [c.get("subject") for c in context.get_ca_certs()]
    assert len(subjects) == 1
    monkeypatch.delenv(CA_FILE_ENV)
    assert ca_file() is None


def test_server_name() -> None:
    assert server_name("verify", "10.0.0.1", "mail.example.com") == "mail.example.com"
    assert server_name("verify", "mx.example.com", None) == "mx.example.com"
