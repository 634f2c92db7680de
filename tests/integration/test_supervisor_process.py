"""``mailmoat run all`` as processes: its children die with it, and a second gateway on the same
ports says so once and exits instead of restarting services that cannot listen."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mailmoat_cli.supervisor import ADDRESS_IN_USE
from tests.support.gateway import ALL, Gateway

CHILDREN_GONE_WITHIN = 10.0
"""Seconds in which every child of a SIGKILLed supervisor must have ended (SIGTERM, graceful)."""


def children_of(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def alive(pid: int) -> bool:
    """Running, not a zombie waiting for its new parent to reap it."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture
def gateway(tmp_path: Path, amqp_url: str, redis_url: str):
    with Gateway(tmp_path / "gw", amqp_url, redis_url) as gw:
        gw.start_all()
        yield gw


def test_children_die_with_a_killed_supervisor(gateway: Gateway) -> None:
    supervisor = gateway.procs[ALL]
    children = children_of(supervisor.pid)
    assert len(children) == len(gateway._supervised) == 5  # ingress, routing, egress, recorder, console
    supervisor.send_signal(signal.SIGKILL)  # not gateway.kill: that also kills the process group
    supervisor.wait(timeout=10)
    started = time.monotonic()
    while any(alive(pid) for pid in children) and time.monotonic() - started < CHILDREN_GONE_WITHIN:
        time.sleep(0.05)
    assert not any(alive(pid) for pid in children), "children outlived their supervisor"
    print(f"children gone {time.monotonic() - started:.2f} s after the supervisor was killed")
    with pytest.raises(OSError):  # nothing listens any more
        socket.create_connection(("127.0.0.1", gateway.smtp_port), timeout=2)


def test_a_second_supervisor_on_taken_ports_exits_once_with_a_clear_message(gateway: Gateway) -> None:
    started = time.monotonic()
    second = subprocess.run([sys.executable, "-m", "mailmoat_cli.main", "run", "all"], env=gateway.env,
                            cwd=gateway.workdir, capture_output=True, text=True, timeout=60)
    took = time.monotonic() - started
    assert second.returncode == ADDRESS_IN_USE, second.stderr
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1, second.stderr
    assert f"port {gateway.port_of('ingress')} (the metrics port of ingress[0]) is already in use" in lines[0]
    assert "another mailmoat" in lines[0]
    assert took < 10
    assert gateway.ready("ingress") and gateway.ready("egress")  # the first one was not disturbed


def test_a_service_that_cannot_listen_says_so_once_and_exits(tmp_path: Path) -> None:
    with Gateway(tmp_path, "amqp://guest:guest@127.0.0.1:1/none", "redis://127.0.0.1:1/15") as gw, \
            socket.socket() as squatter:
        squatter.bind(("0.0.0.0", gw.port_of("devmailbox")))
        squatter.listen()
        run = subprocess.run([sys.executable, "-m", "mailmoat_cli.main", "run", "devmailbox"], env=gw.env,
                             cwd=gw.workdir, capture_output=True, text=True, timeout=60)
    assert run.returncode == ADDRESS_IN_USE
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "devmailbox[0] cannot listen, its port is in use" in lines[0], run.stderr
    assert "Traceback" not in run.stderr
