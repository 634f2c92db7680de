"""The RabbitMQ permissions of deploy/k8s (one user per service, rabbitmq-users.yaml) on a real broker:
ingress, routing and egress each log in as their own user with exactly the rendered permissions,
and mail goes through; a stage's user cannot consume another stage's queue."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import aio_pika
import aio_pika.abc
import aio_pika.exceptions
import aiormq.exceptions
import pytest
import redis

from tests.deploy.kustomize import render
from tests.e2e.conftest import POLICY, ROUTING_HOP
from tests.e2e.test_mail_flow import message, send
from tests.support.gateway import Gateway
from tests.support.infra import (
    RABBITMQ_HOST,
    RABBITMQ_PORT,
    REDIS_TEST_URL,
    amqp_url_for,
    create_vhost,
    delete_vhost,
)
from tests.support.sink import SmtpSink

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
SERVICES = ("ingress", "routing", "egress")
REDIS_URL = REDIS_TEST_URL.rsplit("/", 1)[0] + "/13"


def rendered_permissions() -> dict[str, dict[str, str]]:
    resources = render(K8S / "overlays" / "production", [K8S / "components" / "filters"])
    return {p["spec"]["userReference"]["name"]: p["spec"]["permissions"]
            for p in resources if p["kind"] == "Permission"}


def password_hash(password: str) -> str:
    """RabbitMQ's rabbit_password_hashing_sha256: base64(salt + sha256(salt + password))."""
    salt = os.urandom(4)
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


@pytest.fixture(scope="module")
def users() -> Iterator[tuple[str, dict[str, str]]]:
    """A vhost and, for each service, a user with the manifests' permissions on it (one
    ``rabbitmqctl import_definitions``): (vhost, AMQP URL per service)."""
    vhost = create_vhost()
    permissions = rendered_permissions()
    definitions: dict[str, list[dict[str, object]]] = {"users": [], "permissions": []}
    urls = {}
    for service in SERVICES:
        user, password = f"mailmoat-{service}-{uuid.uuid4().hex[:6]}", uuid.uuid4().hex
        definitions["users"].append({"name": user, "password_hash": password_hash(password), "tags": [],
                                     "hashing_algorithm": "rabbit_password_hashing_sha256"})
        definitions["permissions"].append({"user": user, "vhost": vhost, **permissions[f"mailmoat-{service}"]})
        urls[service] = f"amqp://{user}:{password}@{RABBITMQ_HOST}:{RABBITMQ_PORT}/{vhost}"
    with tempfile.NamedTemporaryFile("w", suffix=".json") as file:
        json.dump(definitions, file)
        file.flush()
        os.chmod(file.name, 0o644)  # the broker's node reads it
        subprocess.run(["rabbitmqctl", "-q", "import_definitions", file.name], check=True, capture_output=True)
    asyncio.run(_wait_until_login(list(urls.values())))  # the import finishes asynchronously
    try:
        yield vhost, urls
    finally:
        for entry in definitions["users"]:
            subprocess.run(["rabbitmqctl", "-q", "delete_user", str(entry["name"])], capture_output=True)
        delete_vhost(vhost)


async def _wait_until_login(urls: list[str], timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    for url in urls:
        while True:
            try:
                connection = await aio_pika.connect(url, timeout=5)
            except aio_pika.exceptions.ProbableAuthenticationError:
                if asyncio.get_running_loop().time() > deadline:
                    raise
                await asyncio.sleep(0.1)
                continue
            await connection.close()
            break


def test_each_service_works_with_its_own_least_permissions(users: tuple[str, dict[str, str]]) -> None:
    _, urls = users
    store = redis.Redis.from_url(REDIS_URL)
    store.flushdb()
    tmp = Path(tempfile.mkdtemp(prefix="mailmoat-users-"))
    gateways: list[Gateway] = []
    try:
        with SmtpSink(pipelining=True) as sink:
            policy = tmp / "policy.yaml"
            policy.write_text((POLICY + ROUTING_HOP).format(sink_port=sink.port, max_size=1_000_000))
            for service in SERVICES:
                gateway = Gateway(tmp / service, urls[service], REDIS_URL, policy)
                gateways.append(gateway)
                gateway.start((service,), recorder=False)
            code, reply = send(gateways[0].smtp_port, "s@sender.org", ["alice@example.com"], message(1))
            assert code == 250, reply
            sink.wait_for(1, timeout=20)
    finally:
        for gateway in gateways:
            gateway.stop()
        store.flushdb()
        store.close()
        shutil.rmtree(tmp, ignore_errors=True)


def test_a_stage_user_cannot_consume_another_stage_queue(users: tuple[str, dict[str, str]]) -> None:
    vhost, urls = users

    async def ensure(queue: str) -> None:
        connection = await aio_pika.connect(amqp_url_for(vhost), timeout=10)
        try:
            try:
                await (await connection.channel()).declare_queue(queue, passive=True)
            except aio_pika.exceptions.ChannelNotFoundEntity:
                await (await connection.channel()).declare_queue(queue, durable=True)
        finally:
            await connection.close()

    async def ignore(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        return None

    async def consume(url: str, queue: str) -> None:
        await ensure(queue)
        connection = await aio_pika.connect(url, timeout=10)
        try:
            declared = await (await connection.channel()).declare_queue(queue, passive=True)
            await declared.consume(ignore)
        finally:
            await connection.close()

    asyncio.run(consume(urls["routing"], "mailmoat.routing"))  # its own: allowed
    with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
        asyncio.run(consume(urls["routing"], "mailmoat.egress"))
    with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
        asyncio.run(consume(urls["ingress"], "mailmoat.routing"))
