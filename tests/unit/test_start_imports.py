"""What a service process imports before its first message: not the modules it loads only when it needs them.

Each process of ``mailmoat run all`` pays for every module it imports (bench/README.md, the memory table);
these modules are loaded where they are first used, and this guards against one coming back at start-up.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

# ``mailmoat run <service>`` as it runs, up to the moment the service would start: the modules imported then.
_START = """
import json, sys
from mailmoat_platform import runtime
def started(main):
    print(json.dumps(sorted(sys.modules)))
runtime.run_service = started
from mailmoat_cli.main import main
sys.exit(main(["run", sys.argv[1]]))
"""

# ``mailmoat run all`` up to the moment the supervisor would start its children.
_SUPERVISOR = """
import json, sys
from mailmoat_cli import supervisor
def started(self):
    print(json.dumps(sorted(sys.modules)))
    return 0
supervisor.Supervisor.run = started
from mailmoat_cli.main import main
sys.exit(main(["run", "all"]))
"""

OTHER_COMMANDS = ["mailmoat_cli.check", "mailmoat_cli.db", "mailmoat_cli.dkim", "mailmoat_cli.tracecli",
                  "mailmoat_antispam.train"]
"""The modules of the command line's other commands: a service never runs them."""
LOADED_WHEN_USED = ["aiohttp", "authlib", "httpx", "joserfc", "nh3", "cryptography.x509", "opentelemetry.sdk",
                    "psutil"]
"""aiohttp's client (Rspamd, MTA-STS), the console's OpenID Connect and HTML sanitiser, X.509 (DANE), the
OpenTelemetry SDK (and psutil, which its resources load) when spans are exported (not in this test)."""
NEVER = ["redis"]
"""redis-py: the services talk to Redis through ``mailmoat_platform.redisclient``; redis-py is the tests' own."""
ANY_SERVICE = OTHER_COMMANDS + LOADED_WHEN_USED + NEVER
NOT_AT_START = {
    "ingress": [*ANY_SERVICE, "dkim", "psycopg", "mailmoat_routing.service"],
    "connection_filter": [*ANY_SERVICE, "dkim", "psycopg"],
    "antivirus": [*ANY_SERVICE, "dkim", "psycopg"],
    "antispam": ANY_SERVICE,
    "routing": [*ANY_SERVICE, "dkim"],
    "egress": [*ANY_SERVICE, "psycopg"],
    "recorder": [*ANY_SERVICE, "dkim"],
    "console": ANY_SERVICE,
}


def _modules(program: str, *args: str) -> set[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
    done = subprocess.run([sys.executable, "-c", program, *args], capture_output=True, text=True, timeout=120,
                          check=True, env=env)
    return set(json.loads(done.stdout))


def _loaded(modules: set[str], names: list[str]) -> list[str]:
    return [name for name in names if name in modules or any(m.startswith(name + ".") for m in modules)]


@pytest.mark.parametrize("service", sorted(NOT_AT_START))
def test_a_service_imports_at_start_only_what_it_uses_at_start(service: str) -> None:
    assert _loaded(_modules(_START, service), NOT_AT_START[service]) == []


def test_the_supervisor_imports_no_service_and_no_other_command() -> None:
    modules = _modules(_SUPERVISOR)
    assert _loaded(modules, [*ANY_SERVICE, "dkim", "psycopg", "prometheus_client"]) == []
    # the policy is loaded and checked in a child process (mailmoat_cli.policyfacts)
    assert _loaded(modules, ["mailmoat_policy", "mailmoat_platform.models", "pydantic", "yaml"]) == []
    assert [m for m in modules if m.startswith("mailmoat_") and m.endswith(".service")] == []
