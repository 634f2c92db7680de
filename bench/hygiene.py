"""The hygiene comparison's parts: a local DNS server, a private clamd, Rspamd as Postfix's milter, and
the bench policy with every filter stage.

``bench/e2e.py --hygiene`` (``BENCH_HYGIENE=1 make bench``) uses them:

- DNS: a private ``unbound`` on a loopback port whose one local zone, the root, answers every name
  NXDOMAIN at once, for mailmoat (``dns.nameservers``) and Rspamd (``options.dns.nameserver``); the queries
  each system asks are counted (``unbound-control stats_noreset``). Postfix itself asks no DNS
  here (``smtp_dns_support_level = disabled``, the relay host a bracketed address; the client's name
  comes from /etc/hosts).
- clamd: the test suite's (``tests/support/clamd.py``) with a database of one hash signature (EICAR),
  shared by both systems.
- Rspamd (Debian's package, its stock ``common.conf``: every module and rule as shipped): one
  ``rspamd_proxy`` in milter mode (the stock ``worker-proxy.inc`` settings) in front of the stock
  ``normal`` workers, and the stock controller, each on a free loopback port; Redis db
  ``BENCH_RSPAMD_REDIS_DB`` (12) for its state (Bayes, history, ...); greylisting and rate limits off
  (they would throttle the bench's one sender), and the greylist action with them; its antivirus
  module pointed at the same clamd (stock attachment scanning, action reject).
"""

from __future__ import annotations

import os
import pwd
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.support.clamd import ClamdServer  # noqa: E402
from tests.support.daemon import Daemon, find_binary  # noqa: E402
from tests.support.rspamd import rspamd_command  # noqa: E402

CONFDIR = Path("/etc/rspamd")
ONE_SIGNATURE = "44d88612fea8a8f36de82e1278abb02f:68:Eicar-Test-Signature\n"
RSPAMD_REDIS_DB = int(os.environ.get("BENCH_RSPAMD_REDIS_DB", "12"))

RSPAMD_CONF = """\
.include "$CONFDIR/common.conf"

options {{
    pidfile = "$RUNDIR/rspamd.pid";
    .include "$CONFDIR/options.inc"
    .include(try=true; priority=1,duplicate=merge) "$LOCAL_CONFDIR/local.d/options.inc"
}}

logging {{
    type = "file";
    filename = "$LOGDIR/rspamd.log";
    .include "$CONFDIR/logging.inc"
}}

worker "normal" {{
    bind_socket = "127.0.0.1:{normal}";
    .include "$CONFDIR/worker-normal.inc"
}}

worker "controller" {{
    bind_socket = "127.0.0.1:{controller}";
    .include "$CONFDIR/worker-controller.inc"
}}

# The stock worker-proxy.inc, with its upstream on this instance's normal workers.
worker "rspamd_proxy" {{
    bind_socket = "127.0.0.1:{proxy}";
    milter = yes;
    timeout = 120s;
    upstream "local" {{
        default = yes;
        hosts = "127.0.0.1:{normal}";
    }}
    count = 1;
    max_retries = 5;
    discard_on_reject = false;
    quarantine_on_reject = false;
    spam_header = "X-Spam";
    reject_message = "Spam message rejected";
}}
"""

LOCAL = {
    # The bench's client is on loopback, which Rspamd treats as a local network and skips SPF, DKIM, DMARC,
    # the block lists and more for: it is an outside client here, as for mailmoat (internal_networks: []).
    "options.inc": ('dns {{\n    nameserver = ["127.0.0.1:{dns_port}"];\n    timeout = 1s;\n    retransmits = 1;\n}}\n'
                    "check_local = true;\n"),
    "dkim.conf": "check_local = true;\n",
    "rbl.conf": "default_exclude_private_ips = false;\ndefault_exclude_local = false;\n",
    "redis.conf": 'servers = "127.0.0.1:6379";\ndb = "{redis_db}";\n',
    "greylist.conf": "enabled = false;\n",
    "ratelimit.conf": "enabled = false;\n",
    "actions.conf": "greylist = null;\n",
    "antivirus.conf": ('clamav {{\n    type = "clamav";\n    servers = "127.0.0.1:{clamd_port}";\n'
                       '    action = "reject";\n    scan_mime_parts = true;\n    symbol = "CLAM_VIRUS";\n'
                       '    log_clean = false;\n}}\n'),
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ping(port: int, timeout: float = 1.0) -> bool:
    """Whether an rspamd HTTP worker answers ``GET /ping``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"GET /ping HTTP/1.0\r\n\r\n")
            reply = sock.recv(4096)
            return reply.startswith(b"HTTP/1.") and b" 200 " in reply.split(b"\r\n", 1)[0]
    except OSError:
        return False


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class RspamdMilter(Daemon):
    """rspamd (main, normal workers, controller, proxy in milter mode) configured as described above."""

    name = "rspamd"

    def __init__(self, workdir: Path, *, dns_port: int, clamd_port: int, ready_timeout: float = 180.0):
        binary = find_binary("rspamd", "/usr/bin/rspamd")
        if binary is None:
            raise RuntimeError("rspamd is not installed (apt-get install rspamd; scripts/setup.sh --test)")
        user = "_rspamd" if _exists("_rspamd") else "nobody"  # rspamd will not run its workers as root
        super().__init__(workdir, user=user, ready_timeout=ready_timeout)
        self.binary = binary
        self.normal_port, self.controller_port, self.proxy_port = free_port(), free_port(), free_port()
        self.dirs = {name: self.workdir / name for name in ("local", "db", "run")}
        self.own(*self.dirs.values())
        local = self.dirs["local"] / "local.d"
        local.mkdir(exist_ok=True)
        for name, text in LOCAL.items():
            (local / name).write_text(text.format(dns_port=dns_port, clamd_port=clamd_port, redis_db=RSPAMD_REDIS_DB))
        self.config = self.workdir / "rspamd.conf"
        self.config.write_text(RSPAMD_CONF.format(normal=self.normal_port, controller=self.controller_port,
                                                  proxy=self.proxy_port))

    def command(self) -> list[str]:
        return rspamd_command(self.binary, self.config, self.dirs, self.workdir, self.user)

    def ready(self) -> bool:
        return ping(self.normal_port) and port_open(self.proxy_port)

    def logs(self) -> list[Path]:
        return [self.log, self.workdir / "rspamd.log"]

    def pids(self) -> list[int]:
        """The main process and its workers."""
        if self.proc is None or self.proc.poll() is not None:
            return []
        return [self.proc.pid, *_children(self.proc.pid)]


def flush_rspamd_redis() -> None:
    subprocess.run(["redis-cli", "-n", str(RSPAMD_REDIS_DB), "flushdb"], capture_output=True, timeout=30)


def milter_params(proxy_port: int) -> dict[str, str]:
    """Postfix's milter settings for rspamd_proxy (Rspamd's MTA integration guide), tempfail on a milter
    fault so that nothing passes unchecked (as mailmoat's antivirus keeps a message while clamd is away)."""
    return {
        "smtpd_milters": f"inet:127.0.0.1:{proxy_port}",
        "non_smtpd_milters": "",
        "milter_protocol": "6",
        "milter_mail_macros": "i {mail_addr} {client_addr} {client_name} {auth_authen}",
        "milter_default_action": "tempfail",
    }


def hygiene_policy(policy: dict, dns_port: int, dlp: bool = False) -> dict:
    """The bench policy with every filter stage and the look-ups that match Rspamd's stock ones: a DNS
    block list for the client (Spamhaus ZEN), PTR and HELO checks, URI block lists (Spamhaus DBL, SURBL);
    SPF, DKIM, DMARC and ARC as always; all asked of the local DNS server."""
    policy["pipeline"]["filters"] = ["connection_filter", "antivirus", "antispam"] + (["dlp"] if dlp else [])
    policy["dns"] = {"nameservers": ["127.0.0.1"], "port": dns_port, "timeout": 1}
    policy["connection_filter"] = {
        "dnsbl": [{"zone": "zen.spamhaus.org", "weight": 5, "action": "annotate",
                   "codes": {"127.0.0.2": "SBL", "127.0.0.3": "CSS", "127.0.0.4": "XBL"}}],
        "ptr": True, "helo": True,
    }
    policy["antispam"] = {"uribl": [{"zone": "dbl.spamhaus.org"}, {"zone": "multi.surbl.org"}]}
    return policy


UNBOUND_CONF = """server:
  interface: 127.0.0.1
  port: {port}
  do-daemonize: no
  username: ""
  chroot: ""
  directory: "{workdir}"
  pidfile: ""
  use-syslog: no
  logfile: ""
  verbosity: 0
  num-threads: 1
  do-ip6: no
  access-control: 127.0.0.0/8 allow
  module-config: "iterator"
  local-zone: "." always_nxdomain
  statistics-cumulative: yes
  extended-statistics: no
remote-control:
  control-enable: yes
  control-interface: 127.0.0.1
  control-port: {control}
  control-use-cert: no
"""


class NxResolver(Daemon):
    """unbound answering NXDOMAIN for every name, on a loopback port."""

    name = "unbound"

    def __init__(self, workdir: Path):
        super().__init__(workdir)
        self.port, self.control = free_port(), free_port()
        self.config = self.workdir / "unbound.conf"
        self.config.write_text(UNBOUND_CONF.format(port=self.port, control=self.control, workdir=self.workdir))

    def command(self) -> list[str]:
        binary = find_binary("unbound", "/usr/sbin/unbound")
        if binary is None:
            raise RuntimeError("unbound is not installed (apt-get install unbound; scripts/setup.sh --test)")
        return [binary, "-d", "-c", str(self.config)]

    def ready(self) -> bool:
        return self.queries() >= 0

    def queries(self) -> int:
        """Queries answered so far (-1 when unbound does not answer its control port)."""
        binary = find_binary("unbound-control", "/usr/sbin/unbound-control")
        if binary is None:
            return -1
        done = subprocess.run([binary, "-c", str(self.config), "stats_noreset"], capture_output=True, text=True,
                              timeout=10)
        for line in done.stdout.splitlines():
            if line.startswith("total.num.queries="):
                return int(line.split("=", 1)[1])
        return -1

    def pids(self) -> list[int]:
        return [self.proc.pid] if self.proc is not None and self.proc.poll() is None else []


class SharedParts:
    """The DNS server and clamd both systems use; ``stop`` stops what was started."""

    def __init__(self, workdir: Path):
        self.dns = NxResolver(workdir / "unbound")
        self.clamd = ClamdServer(workdir / "clamd")
        (self.clamd.database / "mailmoat-test.hdb").write_text(ONE_SIGNATURE)
        self._started: list[object] = []

    def start(self) -> SharedParts:
        self.dns.start()
        self._started.append(self.dns)
        self.clamd.start()
        self._started.append(self.clamd)
        return self

    def dns_queries(self) -> int:
        return self.dns.queries()

    def stop(self) -> None:
        for part in reversed(self._started):
            part.stop()  # type: ignore[attr-defined]
        self._started = []


def _exists(user: str) -> bool:
    try:
        pwd.getpwnam(user)
    except KeyError:
        return False
    return True


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                found += [int(p) for p in (task / "children").read_text().split()]
            except OSError:
                continue
    except OSError:
        return []
    return found
