"""discover.sh of the Sentinel component (which node is primary) run by sh and redis-cli against a
stand-in Sentinel: the name it gives is taken, an error reply is no answer. The whole design (three
nodes, three Sentinels, HAProxy, a kill -9) runs in tests/drills/redis_sentinel.py."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.support.infra import free_port

COMPONENT = Path(__file__).resolve().parents[2] / "deploy/k8s/components/redis-sentinel/sentinel.yaml"
FIRST, OTHER = "redis-a.nodes", "redis-b.nodes"


def _scripts() -> dict[str, str]:
    docs = yaml.safe_load_all(COMPONENT.read_text())
    return next(d for d in docs if d and d["metadata"]["name"] == "mailmoat-redis-sentinel")["data"]


class FakeSentinel:
    """Answers AUTH with +OK and SENTINEL GET-MASTER-ADDR-BY-NAME with ``reply`` (raw RESP)."""

    def __init__(self, reply: bytes) -> None:
        self.reply = reply
        self.port = free_port()
        self.server = socket.create_server(("127.0.0.1", self.port))
        self.server.settimeout(0.2)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(2)
                try:
                    while chunk := conn.recv(4096):
                        if b"AUTH" in chunk.upper():
                            conn.sendall(b"+OK\r\n")
                        if b"GET-MASTER-ADDR-BY-NAME" in chunk.upper():
                            conn.sendall(self.reply)
                except OSError:
                    pass

    def close(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=2)
        self.server.close()


@pytest.fixture
def discover(tmp_path: Path) -> Iterator[object]:
    if shutil.which("redis-cli") is None:
        pytest.skip("redis-cli is not installed (Debian package redis-tools)")
    (tmp_path / "discover.sh").write_text(_scripts()["discover.sh"])
    sentinels: list[FakeSentinel] = []

    def run(reply: bytes) -> str:
        sentinel = FakeSentinel(reply)
        sentinels.append(sentinel)
        # the node names resolve to nothing but the first: 127.0.0.1 is asked, under every name
        env = {"PATH": os.environ["PATH"], "REDIS_PASSWORD": "secret", "REDIS_NODES": f"127.0.0.1 {OTHER}",
               "REDIS_NODE_NAME": OTHER, "SENTINEL_PORT": str(sentinel.port)}
        done = subprocess.run(["sh", "-c", '. ./discover.sh; printf %s "$MASTER"'], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=20)
        assert done.returncode == 0, done.stderr
        return done.stdout

    yield run
    for sentinel in sentinels:
        sentinel.close()


def test_the_primary_the_sentinel_names(discover) -> None:  # type: ignore[no-untyped-def]
    assert discover(f"*2\r\n${len(OTHER)}\r\n{OTHER}\r\n$4\r\n6379\r\n".encode()) == OTHER


@pytest.mark.parametrize("error", [b"-NOAUTH Authentication required.\r\n",
                                   b"-ERR unknown command 'sentinel'\r\n", b"*-1\r\n"])
def test_an_error_reply_is_no_answer(discover, error: bytes) -> None:  # type: ignore[no-untyped-def]
    """redis-cli prints an error reply on stdout and exits 0: taken as a name, the node would start
    as a replica of "NOAUTH Authentication required." (before the check, it did)."""
    assert discover(error) == "127.0.0.1"  # nobody answered: the first node
