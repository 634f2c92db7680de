"""docker-compose.yml offline: the compose specification's JSON schema (as shipped by check-jsonschema),
start order on health, and the wiring to the code's conventions and to the Prometheus/Grafana files."""

from __future__ import annotations

import copy
import importlib.resources
import inspect
import json
import re
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

from mailmoat_cli.main import SERVICES
from mailmoat_platform.runtime import Runtime
from mailmoat_platform.settings import DEFAULT_METRICS_PORTS, Settings
from mailmoat_platform.stages import filter_names
from mailmoat_platform.telemetry import otel_service_name

REPO = Path(__file__).resolve().parents[2]
IMAGE = "mailmoat:local"


def interpolate(value: Any) -> Any:
    """Compose's variable interpolation with nothing set in the environment: ``${X:-default}`` and
    ``${X-default}`` give the default, ``${X}`` the empty string, ``$$`` a dollar sign."""
    if isinstance(value, dict):
        return {k: interpolate(v) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v) for v in value]
    if isinstance(value, str):
        pattern = r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}"
        return re.sub(pattern, lambda m: "$" if m.group(0) == "$$" else (m.group(2) or ""), value)
    return value


@cache
def compose() -> dict[str, Any]:
    """docker-compose.yml as compose sees it when no variable is set."""
    return interpolate(yaml.safe_load((REPO / "docker-compose.yml").read_text()))


@cache
def schema() -> dict[str, Any]:
    from check_jsonschema.builtin_schemas import vendor

    return json.loads((importlib.resources.files(vendor) / "compose-spec.json").read_text())


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def mailmoat_services() -> dict[str, dict[str, Any]]:
    """The long-running services of the image (not its one-shot commands, such as ``db upgrade``)."""
    return {name: s for name, s in services().items() if s.get("image") == IMAGE and s["command"][0] == "run"}


def module(service: dict[str, Any]) -> str:
    command = service["command"]
    assert command[0] == "run" and len(command) == 2
    return command[1]


def duration(text: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"([0-9.]+)(ms|s|m|h)", text)
    assert parts and "".join(a + b for a, b in parts) == text, text
    return sum(float(value) * units[unit] for value, unit in parts)


def test_matches_the_compose_schema() -> None:
    validator = jsonschema.Draft202012Validator(schema())
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(compose())]
    assert not errors, errors


def test_interpolation() -> None:
    assert interpolate({"a": ["${A:-x}:${B-y}:${C}:$$D"]}) == {"a": ["x:y::$D"]}


def test_schema_catches_mistakes() -> None:
    validator = jsonschema.Draft202012Validator(schema())
    broken = copy.deepcopy(compose())
    broken["services"]["ingress"]["healthcheck"]["intervall"] = "5s"
    assert not validator.is_valid(broken)
    broken = copy.deepcopy(compose())
    broken["services"]["routing"]["depends_on"]["redis"]["condition"] = "service_ready"
    assert not validator.is_valid(broken)


def test_every_filter_stage_has_a_service() -> None:
    assert {module(s) for s in mailmoat_services().values() if s.get("profiles")} == set(filter_names())


def test_every_service_runs_from_the_one_image() -> None:
    found = {module(s) for s in mailmoat_services().values()}
    assert {"ingress", "routing", "egress"} <= found <= set(SERVICES)
    for name, service in mailmoat_services().items():
        assert service["build"]["context"] == ".", name
        assert name == module(service).replace("_", "-"), name


def test_filter_stages_are_an_optional_profile() -> None:
    for name, service in mailmoat_services().items():
        expected = ["filters"] if module(service) in filter_names() else None
        assert service.get("profiles") == expected, name


def test_healthchecks_hit_healthz_on_the_metrics_port() -> None:
    for name, service in mailmoat_services().items():
        test = service["healthcheck"]["test"]
        assert test[0] == "CMD"
        url = f"http://127.0.0.1:{DEFAULT_METRICS_PORTS[module(service)]}/healthz"
        assert any(url in part for part in test), name


def test_start_order_on_health() -> None:
    """Every dependency exists, is healthy-gated only when it has a healthcheck, is not in a profile
    its dependant lacks, and the graph has no cycle."""
    all_services = services()
    for name, service in all_services.items():
        for dependency, spec in (service.get("depends_on") or {}).items():
            assert dependency in all_services, f"{name} -> {dependency}"
            if spec["condition"] == "service_healthy":
                check = all_services[dependency].get("healthcheck")
                assert check and not check.get("disable"), f"{name} waits for {dependency}, which has no healthcheck"
            assert set(all_services[dependency].get("profiles", [])) <= set(service.get("profiles", [])), name
    for name, service in mailmoat_services().items():
        for backend in ("rabbitmq", "redis"):
            assert service["depends_on"][backend] == {"condition": "service_healthy"}, name

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"dependency cycle {(*path, name)}"
        for dependency in all_services[name].get("depends_on") or {}:
            visit(dependency, (*path, name))

    for name in all_services:
        visit(name, ())


def test_services_are_locked_down() -> None:
    grace = inspect.signature(Runtime.shutdown).parameters["grace"].default
    for name, service in mailmoat_services().items():
        assert service["read_only"] is True, name
        assert "/tmp" in service["tmpfs"], name
        assert service["user"].split(":")[0] not in ("0", "root"), name
        assert service["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in service["security_opt"], name
        assert duration(service["stop_grace_period"]) > grace, name


def test_environment_points_at_the_stack() -> None:
    rabbitmq = services()["rabbitmq"]["environment"]
    for name, service in mailmoat_services().items():
        env = service["environment"]
        amqp = urlsplit(env["MAILMOAT_AMQP_URL"])
        assert amqp.hostname == "rabbitmq" and (amqp.port or 5672) == 5672, name
        assert amqp.username == rabbitmq["RABBITMQ_DEFAULT_USER"], name
        assert amqp.password == rabbitmq["RABBITMQ_DEFAULT_PASS"], name
        assert urlsplit(env["MAILMOAT_REDIS_URL"]).hostname == "redis", name
        policy = PurePosixPath(env["MAILMOAT_POLICY"])
        sources = [v.split(":") for v in service["volumes"]]
        mount = next(((host, target) for host, target, *_ in sources if policy.is_relative_to(target)), None)
        assert mount, f"{name}: {policy} is not under a mounted directory"
        host, target = mount
        assert (REPO / host / policy.relative_to(target)).is_file(), name


def test_otel_service_names_as_run_all_names_them() -> None:
    for service in mailmoat_services().values():
        name = service["environment"].get("OTEL_SERVICE_NAME")
        assert name is None or name == otel_service_name(module(service)), name


def test_antivirus_scans_with_the_compose_clamd() -> None:
    """The policy's antimalware.clamd (127.0.0.1:3310) is not clamd inside compose: the address is set."""
    antivirus = services()["antivirus"]
    host, port = antivirus["environment"]["MAILMOAT_CLAMD_ADDRESS"].split(":")
    assert host in services() and services()[host]["image"].startswith("clamav/") and port == "3310"
    assert host in antivirus["depends_on"]


def test_bind_mounts_exist() -> None:
    for name, service in services().items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (REPO / source).exists(), f"{name}: {source}"


def test_ingress_publishes_its_smtp_port() -> None:
    ingress = services()["ingress"]
    port = int(ingress["environment"]["MAILMOAT_SMTP_PORT"])
    assert port == Settings().smtp_port
    assert ingress["environment"]["MAILMOAT_SMTP_HOST"] == "0.0.0.0"
    assert any(p.endswith(f":{port}") for p in ingress["ports"])


def test_devmailbox_shares_egress_network_for_the_example_route() -> None:
    devmailbox = services()["devmailbox"]
    assert devmailbox["network_mode"] == "service:egress"
    example = yaml.safe_load((REPO / "config" / "policy.example.yaml").read_text())
    host, port = example["routes"]["devmailbox"]["hosts"][0].rsplit(":", 1)
    env = devmailbox["environment"]
    assert (env["MAILMOAT_DEVMAILBOX_HOST"], env["MAILMOAT_DEVMAILBOX_PORT"]) == (host, port)


def test_prometheus_scrapes_every_service() -> None:
    prometheus = services()["prometheus"]
    assert "./deploy/prometheus:/etc/prometheus:ro" in prometheus["volumes"]
    config = yaml.safe_load((REPO / "deploy" / "prometheus" / "prometheus.yml").read_text())
    targets = {t for job in config["scrape_configs"] for group in job.get("static_configs", [])
               for t in group["targets"]}
    # Services of an optional profile by DNS discovery: no target at all when they do not run.
    targets |= {f"{n}:{sd['port']}" for job in config["scrape_configs"] for sd in job.get("dns_sd_configs", [])
                for n in sd["names"]}
    for name, service in mailmoat_services().items():
        host = service.get("network_mode", "").removeprefix("service:") or name
        assert f"{host}:{DEFAULT_METRICS_PORTS[module(service)]}" in targets, name
    for target in targets:
        assert target.split(":")[0] in services(), target
    (rabbitmq_job,) = [j for j in config["scrape_configs"] if j["job_name"] == "mailmoat-rabbitmq"]
    assert rabbitmq_job["metrics_path"] == "/metrics/per-object"
    plugins = (REPO / "deploy" / "rabbitmq" / "enabled_plugins").read_text()
    assert "rabbitmq_prometheus" in plugins and "rabbitmq_management" in plugins


def test_grafana_provisioning_matches_the_mounts() -> None:
    grafana = services()["grafana"]
    mounts = dict(v.split(":")[:2] for v in grafana["volumes"])
    provisioning = REPO / "deploy" / "grafana" / "provisioning"
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    dashboards = yaml.safe_load((provisioning / "dashboards" / "mailmoat.yml").read_text())
    (provider,) = dashboards["providers"]
    assert PurePosixPath(mounts["./deploy/grafana/mailmoat.json"]).parent == PurePosixPath(provider["options"]["path"])
    datasources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    (source,) = datasources["datasources"]
    assert urlsplit(source["url"]).hostname == "prometheus" and source["type"] == "prometheus"


@pytest.mark.parametrize("backend", ["rabbitmq", "redis", "clamd"])
def test_backends_keep_their_data(backend: str) -> None:
    volumes = services()[backend]["volumes"]
    assert any(v.split(":")[0] in compose()["volumes"] for v in volumes)
    if backend == "redis":
        command = services()["redis"]["command"]
        assert command[command.index("--appendonly") + 1] == "yes"
