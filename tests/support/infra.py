"""Real infrastructure for tests: an isolated RabbitMQ vhost, a Redis database, free ports."""

from __future__ import annotations

import os
import socket
import subprocess
import uuid

RABBITMQ_HOST = os.environ.get("MAILMOAT_TEST_RABBITMQ_HOST", "127.0.0.1")
RABBITMQ_PORT = int(os.environ.get("MAILMOAT_TEST_RABBITMQ_PORT", "5672"))
REDIS_TEST_URL = os.environ.get("MAILMOAT_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def create_vhost() -> str:
    """A fresh RabbitMQ vhost (rabbitmqctl) so tests never see each other's queues."""
    name = f"mailmoat-test-{uuid.uuid4().hex[:10]}"
    subprocess.run(["rabbitmqctl", "-q", "add_vhost", name], check=True, capture_output=True)
    subprocess.run(
        ["rabbitmqctl", "-q", "set_permissions", "-p", name, "guest", ".*", ".*", ".*"],
        check=True,
        capture_output=True,
    )
    return name


def delete_vhost(name: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", "delete_vhost", name], capture_output=True)


def amqp_url_for(vhost: str, host: str = RABBITMQ_HOST, port: int = RABBITMQ_PORT) -> str:
    return f"amqp://guest:guest@{host}:{port}/{vhost}"
