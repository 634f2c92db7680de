"""The production Redis design run for real on loopback: three redis-server nodes and three Sentinels
started by the very scripts of deploy/k8s/components/redis-sentinel, HAProxy with its shipped
haproxy.cfg in front. A client writing through the proxy survives a kill -9 of the primary, the
old primary, restarted, rejoins as a replica, and a planned switchover loses no acknowledged write.

Each node gets an address of its own (127.0.0.2-4, as pods get theirs) and the same ports, so the
scripts run exactly as in the pod; only the environment (node names, ports, directories) differs.
Sentinel keeps the pod's timing (down-after-milliseconds 5000) and Redis its diskless-sync delay
(5 s per full resync), so the drill takes about 35 s: outside the default suite (the file name is
not test_*), run it with ``.venv/bin/pytest -q -s tests/drills/redis_sentinel.py`` (deploy/README.md).
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from tests.support.infra import free_port

PR_SET_PDEATHSIG = 1
COMPONENT = Path(__file__).resolve().parents[2] / "deploy/k8s/components/redis-sentinel/sentinel.yaml"
NODES = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
DOWN_AFTER_MS = 5000
"""Sentinel's down-after-milliseconds, as in the pod."""
PAUSE_MS = 5000
"""CLIENT PAUSE WRITE before the switchover: longer than the promotion and the other replica's move."""
SWITCHOVER_BOUND = 20.0
"""Seconds the drill writes after SENTINEL FAILOVER at most, waiting for the old primary to turn replica."""
FAILOVER_BOUND = 20.0
"""Seconds from the kill until a write through the proxy succeeds again on the new primary."""


def _binary(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
    if path is None:
        pytest.skip(f"{name} is not installed (scripts/setup.sh --test)")
    return path


def _die_with_parent() -> None:
    """In the child: SIGKILL when pytest dies, even by kill -9 (the fixture cleans up otherwise)."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _configmaps() -> dict[str, dict[str, str]]:
    docs = [d for d in yaml.safe_load_all(COMPONENT.read_text()) if d and d["kind"] == "ConfigMap"]
    return {d["metadata"]["name"]: d["data"] for d in docs}


def _free_on_all(addresses: tuple[str, ...]) -> int:
    """A port free on 127.0.0.1 (given out by infra, so no other test takes it) and on every node."""
    for _ in range(50):
        port = free_port()
        try:
            for address in addresses:
                with socket.socket() as sock:
                    sock.bind((address, port))
        except OSError:
            continue
        return port
    raise RuntimeError("no port free on every node address")


def wait_for(what: str, check: Callable[[], Any], timeout: float, interval: float = 0.1) -> Any:
    """Poll ``check`` until it returns something true (exceptions count as not yet); bounded."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            result = check()
        except Exception as exc:  # not there yet, whatever the reason
            last = exc
        else:
            if result:
                return result
            last = result
        time.sleep(interval)
    raise AssertionError(f"{what}: not within {timeout:.0f} s (last: {last!r})")


class Cluster:
    """The processes of the drill; ``stop`` ends every one of them, whatever happened."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.password = uuid.uuid4().hex
        self.redis_port = _free_on_all(NODES)
        self.sentinel_port = _free_on_all(NODES)
        self.proxy_port = free_port()
        self.health_port = free_port()
        maps = _configmaps()
        self.scripts = tmp / "scripts"
        self.scripts.mkdir()
        for name, text in maps["mailmoat-redis-sentinel"].items():
            (self.scripts / name).write_text(text)
        (tmp / "haproxy.cfg").write_text(maps["mailmoat-redis-proxy"]["haproxy.cfg"])
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.common = {"PATH": os.environ["PATH"], "REDIS_PASSWORD": self.password,
                       "REDIS_NODES": " ".join(NODES), "REDIS_PORT": str(self.redis_port),
                       "SENTINEL_PORT": str(self.sentinel_port)}

    def _start(self, key: str, argv: list[str], env: dict[str, str]) -> None:
        with open(self.tmp / f"{key}.log", "ab") as log:  # the child keeps its own descriptor
            self.procs[key] = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                                               stdin=subprocess.DEVNULL, start_new_session=True,
                                               preexec_fn=_die_with_parent)

    def node_env(self, i: int) -> dict[str, str]:
        data = self.tmp / f"data-{i}"
        sentinel = self.tmp / f"sentinel-{i}"
        data.mkdir(exist_ok=True)
        sentinel.mkdir(exist_ok=True)
        return {**self.common, "REDIS_NODE_NAME": NODES[i], "REDIS_BIND": NODES[i], "REDIS_MAXMEMORY": "64mb",
                "REDIS_DATA_DIR": str(data), "SENTINEL_CONFIG_DIR": str(sentinel),
                "SENTINEL_DOWN_AFTER_MS": str(DOWN_AFTER_MS)}

    def start_redis(self, i: int) -> None:
        self._start(f"redis-{i}", ["sh", str(self.scripts / "start-redis.sh")], self.node_env(i))

    def start_sentinel(self, i: int) -> None:
        self._start(f"sentinel-{i}", ["sh", str(self.scripts / "start-sentinel.sh")], self.node_env(i))

    def start_proxy(self) -> None:
        env = {**self.common, "PROXY_BIND": "127.0.0.1", "PROXY_PORT": str(self.proxy_port),
               "PROXY_HEALTH_PORT": str(self.health_port),
               **{f"REDIS_NODE_{i}": address for i, address in enumerate(NODES)}}
        self._start("haproxy", [_binary("haproxy"), "-db", "-f", str(self.tmp / "haproxy.cfg")], env)

    def kill(self, key: str) -> None:
        proc = self.procs.pop(key)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # our own process group (start_new_session)
        proc.wait(timeout=5)

    def stop(self) -> None:
        for key in list(self.procs):
            try:
                self.kill(key)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass

    def node(self, i: int) -> redis.Redis:
        return redis.Redis(host=NODES[i], port=self.redis_port, password=self.password,
                           socket_timeout=2, socket_connect_timeout=2)

    def sentinel(self, i: int) -> redis.Redis:
        return redis.Redis(host=NODES[i], port=self.sentinel_port, password=self.password,
                           socket_timeout=2, socket_connect_timeout=2)

    def client(self) -> redis.Redis:
        """Through the proxy, as the services connect (the gateway's timeouts, runtime.py)."""
        return redis.Redis.from_url(f"redis://:{self.password}@127.0.0.1:{self.proxy_port}/0",
                                    socket_timeout=5, socket_connect_timeout=5)

    def proxy_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/healthz", timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-1500:]}"
                         for p in sorted(self.tmp.glob("*.log")))


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    _binary("redis-server")
    _binary("redis-cli")
    _binary("haproxy")
    running = Cluster(tmp_path)
    try:
        yield running
    finally:
        running.stop()


def replication(client: redis.Redis) -> dict[str, Any]:
    return client.info("replication")


def test_kill_the_primary_and_the_proxy_follows_the_new_one(cluster: Cluster) -> None:
    try:
        _drill(cluster)
    except BaseException:
        print(cluster.logs())  # shown by pytest on failure
        raise


def _drill(cluster: Cluster) -> None:
    # First start: no Sentinel answers yet, so the first node is primary and the others replicate.
    for i in range(3):
        cluster.start_redis(i)
        wait_for(f"node {i} answers", cluster.node(i).ping, 10)
    assert replication(cluster.node(0))["role"] == "master"
    for i in (1, 2):
        wait_for(f"node {i} replicates", lambda i=i: replication(cluster.node(i)).get("master_link_status") == "up", 10)
    for i in range(3):
        cluster.start_sentinel(i)
    for i in range(3):  # every Sentinel knows the primary, both replicas and the two other Sentinels
        wait_for(f"sentinel {i} sees the whole set", lambda i=i: (
            (m := cluster.sentinel(i).sentinel_master("mailmoat"))["num-other-sentinels"] == 2
            and m["num-slaves"] == 2), 15)
    cluster.start_proxy()
    wait_for("the proxy is ready (a primary is known)", cluster.proxy_ready, 10)

    client = cluster.client()
    client.set("drill:before", "1")
    assert cluster.node(0).get("drill:before") == b"1"  # the proxy sent the write to the primary

    # kill -9 the primary: the Sentinels fail over, the proxy moves to the new primary.
    cluster.kill("redis-0")
    killed = time.monotonic()

    def write_after() -> bool:
        return bool(cluster.client().set("drill:after", "2"))

    wait_for("a write through the proxy after the failover", write_after, FAILOVER_BOUND, interval=0.2)
    failover_seconds = time.monotonic() - killed
    masters = [i for i in (1, 2) if replication(cluster.node(i))["role"] == "master"]
    assert len(masters) == 1, masters
    (new,) = masters
    assert cluster.node(new).get("drill:after") == b"2"
    assert cluster.node(new).get("drill:before") == b"1"  # replicated before the kill
    assert cluster.sentinel(1).sentinel_get_master_addr_by_name("mailmoat")[0] == NODES[new].encode()
    # the client made before the kill: its pooled connection was cut, redis-py reconnects through
    # the proxy (its default retry on a connection error) and reaches the new primary
    assert client.set("drill:old-connection", "x")
    assert cluster.node(new).get("drill:old-connection") == b"x"
    assert cluster.proxy_ready()

    # The old primary, restarted by the same script, asks the Sentinels and rejoins as a replica.
    cluster.start_redis(0)
    wait_for("the old primary answers again", cluster.node(0).ping, 10)
    # a replica from its first answer: never a second primary the proxy could send writes to
    assert replication(cluster.node(0))["role"] == "slave"
    wait_for("the old primary rejoins as a replica", lambda: (
        (info := replication(cluster.node(0)))["role"] == "slave"
        and info["master_link_status"] == "up" and info["master_host"] == NODES[new]), 15)
    wait_for("it has the writes made during its absence",
             lambda: cluster.node(0).get("drill:old-connection") == b"x", 5)
    cluster.client().set("drill:end", "3")
    assert cluster.node(new).get("drill:end") == b"3"  # still the new primary behind the proxy
    print(f"failover: writes through the proxy again {failover_seconds:.1f} s after kill -9 "
          f"(down-after-milliseconds {DOWN_AFTER_MS})")
    _switchover(cluster, new)


def _switchover(cluster: Cluster, old: int) -> None:
    """A planned switchover with the primary alive, as deploy/README.md says: CLIENT PAUSE WRITE on
    the primary, then SENTINEL FAILOVER. The old primary stays a primary (the proxy keeps sending it
    writes) until Sentinel converts it some 10 s later; paused, then without replicas
    (min-replicas-to-write 1), it acknowledges none of them, so no write the proxy acknowledged is
    lost when it resyncs from the new primary. (Without the pause the writes of about one second,
    until Sentinel moves the other replica, are lost; without min-replicas-to-write those of the
    whole 10 s: 118 of them in this loop.)"""
    acknowledged: list[str] = []
    refused = 0
    cluster.node(old).execute_command("CLIENT", "PAUSE", str(PAUSE_MS), "WRITE")
    cluster.sentinel(0).sentinel_failover("mailmoat")
    started = time.monotonic()
    converted = None
    n = 0
    while time.monotonic() - started < SWITCHOVER_BOUND:
        key = f"drill:switch:{n}"
        n += 1
        try:
            if cluster.client().set(key, "1"):
                acknowledged.append(key)
        except redis.RedisError:
            refused += 1  # READONLY or NOREPLICAS: the client retries, nothing is lost
        if converted is None and replication(cluster.node(old))["role"] == "slave":
            converted = time.monotonic() - started
        if converted is not None and time.monotonic() - started > converted + 3:
            break
        time.sleep(0.05)
    assert converted is not None, f"the old primary is still a primary {SWITCHOVER_BOUND:.0f} s after the switchover"
    (promoted,) = [i for i in range(3) if replication(cluster.node(i))["role"] == "master"]
    wait_for("the old primary replicates from the promoted one", lambda: (
        replication(cluster.node(old)).get("master_link_status") == "up"), 15)
    primary = cluster.node(promoted)
    lost = [key for key in acknowledged if not primary.exists(key)]
    print(f"switchover: {len(acknowledged)} writes acknowledged, {refused} refused, {len(lost)} lost; "
          f"the old primary a replica after {converted:.1f} s")
    assert not lost, f"{len(lost)} acknowledged writes lost in the switchover: {lost[:5]}"
