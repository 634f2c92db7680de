"""The rendered RabbitMQ permissions with the trace in PostgreSQL, on a real broker: ingress, routing and
egress publish their trace records to mailmoat.trace and the recorder consumes it, each logged in as its
own user with exactly the manifests' permissions; the message's trace reaches PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis

from mailmoat_records import db
from tests.deploy.test_rabbitmq_users import _wait_until_login, password_hash, rendered_permissions
from tests.e2e.conftest import POLICY, ROUTING_HOP
from tests.e2e.test_mail_flow import message, queue_id, send
from tests.support.gateway import Gateway
from tests.support.infra import RABBITMQ_HOST, RABBITMQ_PORT, REDIS_TEST_URL, create_vhost, delete_vhost
from tests.support.sink import SmtpSink

pytestmark = pytest.mark.e2e

SERVICES = ("ingress", "routing", "egress", "recorder")
REDIS_URL = REDIS_TEST_URL


@pytest.fixture(scope="module")
def users() -> Iterator[dict[str, str]]:
    """A vhost and a user per service with the rendered permissions: the AMQP URL of each."""
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
        os.chmod(file.name, 0o644)
        subprocess.run(["rabbitmqctl", "-q", "import_definitions", file.name], check=True, capture_output=True)
    asyncio.run(_wait_until_login(list(urls.values())))
    try:
        yield urls
    finally:
        for entry in definitions["users"]:
            subprocess.run(["rabbitmqctl", "-q", "delete_user", str(entry["name"])], capture_output=True)
        delete_vhost(vhost)


def test_the_trace_goes_through_with_least_permissions(users: dict[str, str], database_url: str) -> None:
    db.upgrade(database_url)
    store = redis.Redis.from_url(REDIS_URL)
    store.flushdb()
    tmp = Path(tempfile.mkdtemp(prefix="mailmoat-recorder-users-"))
    gateways: list[Gateway] = []
    env = {"MAILMOAT_RECORDS": "postgresql", "MAILMOAT_DATABASE_URL": database_url}
    try:
        with SmtpSink(pipelining=True) as sink:
            policy = tmp / "policy.yaml"
            policy.write_text((POLICY + ROUTING_HOP).format(sink_port=sink.port, max_size=1_000_000))
            for service in SERVICES:
                gateway = Gateway(tmp / service, users[service], REDIS_URL, policy, extra_env=env)
                gateways.append(gateway)
                gateway.start((service,), recorder=False)
            code, reply = send(gateways[0].smtp_port, "s@sender.org", ["alice@example.com"], message(1))
            assert code == 250, reply
            mid = queue_id(reply)
            sink.wait_for(1, timeout=20)
            deadline = time.monotonic() + 30
            events: list[str] = []
            while "DELIVER" not in events and time.monotonic() < deadline:
                with psycopg.connect(database_url) as conn:
                    rows = conn.execute("SELECT event FROM trace_events WHERE message_id = %s ORDER BY at",
                                        (mid,)).fetchall()
                events = [r[0] for r in rows]
                time.sleep(0.1)
            assert events[0] == "RECEIVE" and "DELIVER" in events, events
    finally:
        for gateway in gateways:
            gateway.stop()
        store.flushdb()
        store.close()
        shutil.rmtree(tmp, ignore_errors=True)
