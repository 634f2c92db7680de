"""A private Postfix instance configured as a plain relay, for comparison runs.

Its own config_directory, queue_directory and data_directory live under a temporary directory; it
listens on one loopback port, accepts mail from 127.0.0.0/8 only, delivers nothing locally, runs no
content filter, and relays everything to ``relayhost`` (plus optional per-domain transport routes).
``stop()`` stops the instance and removes the directory whatever state it is in.

Standalone: ``python bench/postfix_relay.py --port 2600 --relay 127.0.0.1:2700`` runs one until ^C.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

POSTFIX = "/usr/sbin/postfix"
POSTCONF = "/usr/sbin/postconf"
SYSTEM_MASTER_CF = Path("/etc/postfix/master.cf")


def main_cf(base: Path, port: int, relay: str, transports: dict[str, str],
            extra: dict[str, str] | None = None) -> str:
    """main.cf of a loopback relay that sends everything to ``relay`` (host:port); ``extra``
    parameters are added last (for experiments; the bench uses none)."""
    inline = ", ".join(f"{domain}=smtp:[{hp.rsplit(':', 1)[0]}]:{hp.rsplit(':', 1)[1]}"
                       for domain, hp in transports.items())
    host, relay_port = relay.rsplit(":", 1)
    settings = {
        "compatibility_level": "3.6",
        "queue_directory": str(base / "queue"),
        "data_directory": str(base / "data"),
        "mail_owner": "postfix",
        "setgid_group": "postdrop",
        "syslog_name": "postfix-bench",
        "multi_instance_name": "postfix-bench",
        "maillog_file": str(base / "maillog"),
        "maillog_file_prefixes": str(base),
        "myhostname": "postfix-bench.localdomain",
        "mydomain": "localdomain",
        "mydestination": "",
        "local_recipient_maps": "",
        "local_transport": "error:local delivery is disabled",
        "alias_maps": "",
        "alias_database": "",
        "relay_domains": "",
        "relayhost": f"[{host}]:{relay_port}",
        "transport_maps": f"inline:{{ {inline} }}" if inline else "",
        "mynetworks": "127.0.0.0/8",
        "inet_interfaces": "127.0.0.1",
        "inet_protocols": "ipv4",
        "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
        "content_filter": "",
        "smtpd_tls_security_level": "none",
        "smtp_tls_security_level": "none",
        "smtp_dns_support_level": "disabled",
        "biff": "no",
        **(extra or {}),
    }
    return "".join(f"{key} = {value}\n" for key, value in settings.items())


def master_cf(template: str, port: int) -> str:
    """The system master.cf with the SMTP listener moved to 127.0.0.1:port, chroot off, and no
    other inet listeners."""
    out: list[str] = []
    skipping = False
    for line in template.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            out.append(line)
            continue
        if line[0].isspace():  # continuation of the previous entry
            if not skipping:
                out.append(line)
            continue
        fields = line.split()
        skipping = False
        if len(fields) >= 8 and fields[1] == "inet":
            if fields[0] != "smtp" or fields[7] != "smtpd":
                skipping = True
                continue
            fields[0] = f"127.0.0.1:{port}"
        if len(fields) >= 8:
            fields[4] = "n"
        out.append(" ".join(fields[:8]) + ("" if len(fields) <= 8 else " " + " ".join(fields[8:])))
    return "\n".join(out) + "\n"


class PostfixRelay:
    """A running private Postfix relay; use as a context manager or call start()/stop()."""

    def __init__(self, port: int, relay: str, transports: dict[str, str] | None = None,
                 base: Path | None = None, extra: dict[str, str] | None = None):
        self.port = port
        self.relay = relay
        self.transports = transports or {}
        self.extra = extra or {}
        self._own_base = base is None
        self.base = base or Path(tempfile.mkdtemp(prefix="mailmoat-bench-postfix-"))
        self.config = self.base / "etc"
        self.started = False

    def _postfix(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([POSTFIX, "-c", str(self.config), *args], capture_output=True, text=True,
                              timeout=timeout)

    def start(self, timeout: float = 30.0) -> PostfixRelay:
        self.config.mkdir(parents=True, exist_ok=True)
        self.base.chmod(0o755)  # the postfix user must reach queue/ and data/
        for sub in ("queue", "data"):
            (self.base / sub).mkdir(exist_ok=True)
        shutil.chown(self.base / "data", "postfix", "postfix")
        (self.config / "main.cf").write_text(main_cf(self.base, self.port, self.relay, self.transports, self.extra))
        (self.config / "master.cf").write_text(master_cf(SYSTEM_MASTER_CF.read_text(), self.port))
        (self.base / "maillog").touch()
        done = self._postfix("check")
        if done.returncode != 0:
            raise RuntimeError(f"postfix check failed: {done.stderr.strip()}")
        self.started = True
        done = self._postfix("start")
        if done.returncode != 0:
            raise RuntimeError(f"postfix start failed: {done.stderr.strip()}\n{self.log_tail()}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if _port_open(self.port):
                return self
            time.sleep(0.1)
        raise RuntimeError(f"postfix did not listen on 127.0.0.1:{self.port} within {timeout}s\n{self.log_tail()}")

    def master_pid(self) -> int | None:
        path = self.base / "queue" / "pid" / "master.pid"
        try:
            return int(path.read_text().strip())
        except (OSError, ValueError):
            return None

    def pids(self) -> list[int]:
        """The master process and all its children."""
        master = self.master_pid()
        if master is None or not Path(f"/proc/{master}").exists():
            return []
        return [master, *_children(master)]

    def queue_empty(self) -> bool:
        """Whether no message is waiting in incoming/active/deferred (maildrop is unused)."""
        for sub in ("incoming", "active", "deferred"):
            root = self.base / "queue" / sub
            if root.exists() and any(p.is_file() for p in root.rglob("*")):
                return False
        return True

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join((self.base / "maillog").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """Stop the instance (stop, then abort, then kill) and remove its directory."""
        try:
            if self.started:
                master = self.master_pid()
                with contextlib.suppress(Exception):
                    self._postfix("stop", timeout=30)
                if master is not None and _wait_gone(master, 10):
                    with contextlib.suppress(Exception):
                        self._postfix("abort", timeout=30)
                    if _wait_gone(master, 5):
                        for pid in [master, *_children(master)]:
                            with contextlib.suppress(ProcessLookupError):
                                os.kill(pid, signal.SIGKILL)
                self.started = False
        finally:
            if self._own_base:
                shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> PostfixRelay:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _port_open(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _wait_gone(pid: int, seconds: float) -> bool:
    """True when ``pid`` is still alive after ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not Path(f"/proc/{pid}").exists():
            return False
        time.sleep(0.1)
    return Path(f"/proc/{pid}").exists()


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc/<pid>/task/*/children, else a /proc scan)."""
    found: list[int] = []
    tasks = Path(f"/proc/{pid}/task")
    try:
        for task in tasks.iterdir():
            with contextlib.suppress(OSError):
                found += [int(p) for p in (task / "children").read_text().split()]
        return found
    except OSError:
        pass
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (entry / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


def _main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--relay", required=True, help="host:port every message is relayed to")
    args = parser.parse_args()
    relay = PostfixRelay(args.port, args.relay)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    with relay:
        print(f"postfix relay on 127.0.0.1:{args.port} -> {args.relay} (dir {relay.base}); ^C stops it", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            for _ in range(24 * 3600):
                time.sleep(1)
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
