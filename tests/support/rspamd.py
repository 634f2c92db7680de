"""A real Rspamd for tests: the packaged rules and modules, one normal worker on a loopback port, no network.

The configuration is generated: the package's ``common.conf`` (rules, modules, actions) and ``options.inc``,
with the suite's own local config dir, database, run and log dirs (``--var``), a single normal worker
(no controller, proxy, fuzzy storage or Hyperscan helper), no Redis, and DNS pointed at a resolver the
test gives (``tests/support/dnsserver.py`` answering NXDOMAIN) or at a closed loopback port::

    with RspamdServer(workdir, dns_port=dns.port) as rspamd:    # waits for GET /ping → pong
        rspamd.url                                              # http://127.0.0.1:<port>
"""

from __future__ import annotations

import grp
import pwd
import socket
from pathlib import Path

from tests.support.daemon import Daemon, find_binary
from tests.support.infra import free_port

CONFDIR = Path("/etc/rspamd")
CONFIG = """\
.include "$CONFDIR/common.conf"

options {{
    pidfile = "$RUNDIR/rspamd.pid";
    .include "$CONFDIR/options.inc"
    .include(try=true; priority=10) "$LOCAL_CONFDIR/override.d/options.inc"
}}

logging {{
    type = "file";
    filename = "$LOGDIR/rspamd.log";
    level = "info";
}}

worker "normal" {{
    bind_socket = "{host}:{port}";
    count = 1;
    .include "$CONFDIR/worker-normal.inc"
}}
"""
OPTIONS = """\
dns {{
    nameserver = ["127.0.0.1:{dns_port}"];
    timeout = 0.5s;
    retransmits = 1;
}}
task_timeout = 8s;
disable_hyperscan = true;
"""


def rspamd_binary() -> str | None:
    return find_binary("rspamd", "/usr/bin/rspamd")


def ping(port: int, host: str = "127.0.0.1", timeout: float = 1.0) -> bool:
    """Whether the normal worker answers ``GET /ping``."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"GET /ping HTTP/1.0\r\n\r\n")
            reply = b""
            while len(reply) < 4096:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                reply += chunk
            return reply.startswith(b"HTTP/1.") and b" 200 " in reply.split(b"\r\n", 1)[0]
    except OSError:
        return False


def rspamd_command(binary: str, config: Path, dirs: dict[str, Path], workdir: Path, user: str | None) -> list[str]:
    """rspamd in the foreground with ``config`` and its own local, db, run and log directories (as ``user``)."""
    cmd = [binary, "-f", "-c", str(config), f"--var=CONFDIR={CONFDIR}",
           f"--var=LOCAL_CONFDIR={dirs['local']}", f"--var=DBDIR={dirs['db']}",
           f"--var=RUNDIR={dirs['run']}", f"--var=LOGDIR={workdir}"]
    if user:
        group = grp.getgrgid(pwd.getpwnam(user).pw_gid).gr_name
        cmd += ["-u", user, "-g", group]
    return cmd


class RspamdServer(Daemon):
    """One rspamd main process with one normal worker on a free loopback port."""

    name = "rspamd"

    def __init__(self, workdir: Path, port: int | None = None, *, dns_port: int | None = None,
                 ready_timeout: float = 120.0):
        binary = rspamd_binary()
        if binary is None:
            raise RuntimeError("rspamd is not installed (apt-get install rspamd; scripts/setup.sh --test)")
        user = "_rspamd" if _exists("_rspamd") else "nobody"  # rspamd will not run its workers as root
        super().__init__(workdir, user=user, ready_timeout=ready_timeout)
        self.binary = binary
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.dirs = {name: self.workdir / name for name in ("local", "db", "run")}
        self.own(*self.dirs.values())
        (self.dirs["local"] / "override.d").mkdir(exist_ok=True)
        (self.dirs["local"] / "override.d" / "options.inc").write_text(
            OPTIONS.format(dns_port=dns_port or free_port()))
        self.config = self.workdir / "rspamd.conf"
        self.config.write_text(CONFIG.format(host=self.host, port=self.port))

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        return rspamd_command(self.binary, self.config, self.dirs, self.workdir, self.user)

    def ready(self) -> bool:
        return ping(self.port, self.host)

    def logs(self) -> list[Path]:
        return [self.log, self.workdir / "rspamd.log"]


def _exists(user: str) -> bool:
    try:
        pwd.getpwnam(user)
    except KeyError:
        return False
    return True
