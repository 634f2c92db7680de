"""A DNSSEC-validating resolver for tests: zones signed at test time with ldnsutils (ldns-keygen,
ldns-signzone; ECDSA P-256, NSEC) and served by ``unbound`` from its own auth-zones, validated
against the test trust anchors (the signed zones' DS records), on a loopback port.

So the AD bit a client sees is real: an unsigned zone comes back without it, a record changed after
signing comes back SERVFAIL (bogus). ``tamper`` names records to change after signing::

    with ValidatingResolver(tmp, {"dane.test": (zone_text, True), "plain.test": (text, False)}) as r:
        ...  r.port
"""

from __future__ import annotations

import datetime
import subprocess
from collections.abc import Callable
from pathlib import Path

import dns.exception
import dns.message
import dns.query

from tests.support.daemon import Daemon, find_binary
from tests.support.infra import free_port

UNBOUND = find_binary("unbound", "/usr/sbin/unbound")
LDNS_KEYGEN = find_binary("ldns-keygen")
LDNS_SIGNZONE = find_binary("ldns-signzone")
AVAILABLE = bool(UNBOUND and LDNS_KEYGEN and LDNS_SIGNZONE)


def sign_zone(directory: Path, origin: str, text: str) -> tuple[Path, str]:
    """Sign zone ``text`` of ``origin``; (signed zone file, its DS record as trust anchor)."""
    assert LDNS_KEYGEN and LDNS_SIGNZONE
    unsigned = directory / f"{origin}.zone"
    unsigned.write_text(f"$ORIGIN {origin}.\n$TTL 300\n{text}\n")

    def keygen(*flags: str) -> str:
        out = subprocess.run([LDNS_KEYGEN, "-a", "ECDSAP256SHA256", *flags, origin], cwd=directory,
                             check=True, capture_output=True, text=True, timeout=30)
        return out.stdout.strip()

    ksk, zsk = keygen("-k"), keygen()
    inception = (datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1)).strftime("%Y%m%d")
    subprocess.run([LDNS_SIGNZONE, "-i", inception, "-o", origin, str(unsigned), zsk, ksk], cwd=directory,
                   check=True, capture_output=True, timeout=30)
    return directory / f"{origin}.zone.signed", (directory / f"{ksk}.ds").read_text().strip()


class ValidatingResolver(Daemon):
    name = "unbound"

    def __init__(self, workdir: Path, zones: dict[str, tuple[str, bool]],
                 tamper: Callable[[str, str], str] | None = None):
        """``zones``: origin → (zone text without $ORIGIN, signed?); ``tamper(origin, signed_text)``
        may change a signed zone after signing (to make an answer bogus)."""
        super().__init__(workdir)
        self.port = free_port()
        self.probe = next(iter(zones))
        anchors: list[str] = []
        auth: list[str] = []
        for origin, (text, signed) in zones.items():
            if signed:
                path, ds = sign_zone(self.workdir, origin, text)
                if tamper is not None:
                    path.write_text(tamper(origin, path.read_text()))
                anchors.append(ds)
            else:
                path = self.workdir / f"{origin}.zone"
                path.write_text(f"$ORIGIN {origin}.\n$TTL 300\n{text}\n")
            auth.append(f'auth-zone:\n  name: "{origin}."\n  zonefile: "{path}"\n  for-upstream: yes\n'
                        f'  for-downstream: no\n  fallback-enabled: no\n')
        (self.workdir / "anchors.ds").write_text("\n".join(anchors) + "\n")
        insecure = "".join(f'  domain-insecure: "{o}"\n' for o, (_, signed) in zones.items() if not signed)
        self.config = self.workdir / "unbound.conf"
        self.config.write_text(f"""server:
  interface: 127.0.0.1
  port: {self.port}
  do-daemonize: no
  username: ""
  chroot: ""
  directory: "{self.workdir}"
  pidfile: ""
  use-syslog: no
  logfile: ""
  verbosity: 1
  val-log-level: 2
  do-ip6: no
  do-not-query-localhost: no
  access-control: 127.0.0.0/8 allow
  module-config: "validator iterator"
  trust-anchor-file: "{self.workdir / 'anchors.ds'}"
  local-zone: "test." nodefault
{insecure}""" + "".join(auth))

    def command(self) -> list[str]:
        assert UNBOUND
        return [UNBOUND, "-d", "-c", str(self.config)]

    def ready(self) -> bool:
        query = dns.message.make_query(f"{self.probe}.", "SOA")
        try:
            dns.query.udp(query, "127.0.0.1", timeout=0.3, port=self.port)
        except (dns.exception.DNSException, OSError):
            return False
        return True


__all__ = ["AVAILABLE", "ValidatingResolver", "sign_zone"]
