"""A real SpamAssassin ``spamd`` for tests: Debian's shipped rules, a site config of the suite's own, loopback only.

No network: ``--local`` (no DNS blocklists, Razor, Pyzor), no Bayes, no auto-whitelist, no sa-update; the
rules are the ones the package ships (``/usr/share/spamassassin``) or those of an earlier sa-update, the
plugins those its ``/etc/spamassassin/*.pre`` load; the site's ``local.cf`` is the suite's own::

    with SpamdServer(workdir) as spamd:     # waits for PING → PONG
        spamd.address                       # 127.0.0.1:<port>
"""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

from tests.support.daemon import Daemon, find_binary
from tests.support.infra import free_port

SITE_CONFIG = """\
use_bayes 0
bayes_auto_learn 0
skip_rbl_checks 1
dns_available no
"""
SYSTEM_SITE = Path("/etc/spamassassin")


def spamd_binary() -> str | None:
    return find_binary("spamd", "/usr/sbin/spamd")


def ping(port: int, host: str = "127.0.0.1", timeout: float = 1.0) -> bool:
    """Whether spamd answers ``PING`` with ``PONG``."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"PING SPAMC/1.5\r\n\r\n")
            reply = b""
            while b"\n" not in reply and len(reply) < 256:
                chunk = sock.recv(256)
                if not chunk:
                    break
                reply += chunk
            return reply.startswith(b"SPAMD/") and b" PONG" in reply
    except OSError:
        return False


class SpamdServer(Daemon):
    """One spamd (parent and at most two children) on a free loopback port."""

    name = "spamd"

    def __init__(self, workdir: Path, port: int | None = None, *, ready_timeout: float = 120.0):
        binary = spamd_binary()
        if binary is None:
            raise RuntimeError("spamd is not installed (apt-get install spamd spamassassin; scripts/setup.sh --test)")
        super().__init__(workdir, user="nobody", ready_timeout=ready_timeout)  # spamd will not keep root
        self.binary = binary
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.site = self.workdir / "site"
        self.home = self.workdir / "home"
        self.own(self.site, self.home)
        for pre in sorted(SYSTEM_SITE.glob("*.pre")):  # the plugins the package loads (Check is among them)
            shutil.copy(pre, self.site / pre.name)
        (self.site / "local.cf").write_text(SITE_CONFIG)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def command(self) -> list[str]:
        cmd = [self.binary, f"--listen={self.host}:{self.port}", f"--allowed-ips={self.host}", "--local",
               "--nouser-config", "--max-children=2", "--min-children=1", "--min-spare=1", "--max-spare=1",
               f"--siteconfigpath={self.site}", f"--helper-home-dir={self.home}", "--syslog=stderr",
               f"--pidfile={self.workdir / 'spamd.pid'}", "--timeout-child=30"]
        if self.user:
            cmd.append(f"--username={self.user}")
        return cmd

    def ready(self) -> bool:
        return ping(self.port, self.host)
