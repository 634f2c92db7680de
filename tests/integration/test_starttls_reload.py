"""The STARTTLS certificate follows its files without a restart, laid out as Kubernetes mounts a
Secret (``tls.crt`` -> ``..data/tls.crt``, ``..data`` swapped atomically on renewal): no files yet
means no STARTTLS; once issued it is offered; after a renewal a new session gets the new certificate;
a broken pair keeps the last good one."""

from __future__ import annotations

import asyncio
import contextlib
import os
import smtplib
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme

from mailmoat_ingress.service import IngressServer
from mailmoat_platform.settings import Settings
from tests.support.certs import write_leaf

pytestmark = pytest.mark.integration

POLICY = """
organization:
  hostname: mx.example.com
accepted_domains:
  - domain: example.com
"""


class SecretVolume:
    """A directory as the kubelet keeps a Secret volume: versioned directories, ``..data`` pointing to
    the current one, and each file a link through ``..data``."""

    def __init__(self, root: Path):
        self.root = root
        root.mkdir()
        self.version = 0

    @property
    def cert(self) -> str:
        return str(self.root / "tls.crt")

    @property
    def key(self) -> str:
        return str(self.root / "tls.key")

    def publish(self, cert_pem: bytes, key_pem: bytes) -> None:
        self.version += 1
        directory = self.root / f"..v{self.version}"
        directory.mkdir()
        (directory / "tls.crt").write_bytes(cert_pem)
        (directory / "tls.key").write_bytes(key_pem)
        link = self.root / "..data_tmp"
        link.symlink_to(directory.name)
        os.replace(link, self.root / "..data")
        for name in ("tls.crt", "tls.key"):
            if not (self.root / name).is_symlink():
                (self.root / name).symlink_to(f"..data/{name}")


def leaf_pems(leaf: trustme.LeafCert, tmp: Path, stem: str) -> tuple[bytes, bytes]:
    cert, key = write_leaf(leaf, tmp, stem)
    return Path(cert).read_bytes(), Path(key).read_bytes()


@contextlib.asynccontextmanager
async def ingress(settings: Settings) -> AsyncIterator[IngressServer]:
    server = IngressServer(settings, grace=1.0)
    await server.start()
    try:
        yield server
    finally:
        await server.stop(grace=1.0)


def session(port: int, trust: ssl.SSLContext) -> bytes | None:
    """A new SMTP session: the server certificate (DER) it presents after STARTTLS, None when
    STARTTLS is not offered."""
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo("client.example")
        if not client.has_extn("starttls"):
            return None
        client.starttls(context=trust)
        der = client.sock.getpeercert(binary_form=True)  # type: ignore[union-attr]
        client.ehlo("client.example")
        return der


async def test_a_renewed_certificate_is_used_by_new_sessions_without_restart(
        amqp_url: str, redis_url: str, write_policy, tmp_path: Path) -> None:
    ca = trustme.CA()
    trust = ssl.create_default_context()
    ca.configure_trust(trust)
    trust.check_hostname = False
    first = ca.issue_cert("mx.example.com", "127.0.0.1")
    second = ca.issue_cert("mx.example.com", "127.0.0.1")
    volume = SecretVolume(tmp_path / "mailmoat-tls")
    settings = Settings(amqp_url=amqp_url, redis_url=redis_url, policy_path=str(write_policy(POLICY)),
                        smtp_port=0, log_format="text", tls_cert=volume.cert, tls_key=volume.key)
    settings.metrics_ports = {}

    async def new_session_after_a_check() -> bytes | None:
        await asyncio.sleep(1.05)  # CertificateFiles looks at the files at most once a second
        return await asyncio.to_thread(session, server.port, trust)

    async with ingress(settings) as server:
        assert server.port is not None
        assert await asyncio.to_thread(session, server.port, trust) is None  # not issued yet
        volume.publish(*leaf_pems(first, tmp_path, "first"))
        assert await new_session_after_a_check() == ssl.PEM_cert_to_DER_cert(first.cert_chain_pems[0].bytes().decode())
        started = time.monotonic()
        volume.publish(*leaf_pems(second, tmp_path, "second"))
        renewed = ssl.PEM_cert_to_DER_cert(second.cert_chain_pems[0].bytes().decode())
        assert await new_session_after_a_check() == renewed
        assert time.monotonic() - started < 5
        # A pair that does not fit (the new certificate with the old key): the last good one stays.
        third = ca.issue_cert("mx.example.com")
        volume.publish(leaf_pems(third, tmp_path, "third")[0], leaf_pems(first, tmp_path, "first")[1])
        assert await new_session_after_a_check() == renewed
        assert server.ctx.tls_files is not None and server.ctx.tls_files.loads == 2
