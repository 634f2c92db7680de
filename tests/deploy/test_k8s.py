"""deploy/k8s rendered offline (base, overlays, with and without the filters component): every object
against the Kubernetes schemas or a structural CRD schema, and the wiring between them against the
code's own conventions (ports, queues, probes, grace periods, policy path)."""

from __future__ import annotations

import inspect
import json
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any

import kubernetes_validate
import pytest
import yaml

from mailmoat_cli.main import SERVICES
from mailmoat_ingress.service import IngressServer
from mailmoat_platform.bus import stage_queue
from mailmoat_platform.runtime import Runtime
from mailmoat_platform.settings import DEFAULT_METRICS_PORTS, Settings
from mailmoat_platform.stages import filter_names
from mailmoat_platform.telemetry import otel_service_name
from mailmoat_policy import parse_policy
from mailmoat_records.trace import TRACE_QUEUE
from tests.deploy.crds import SCHEMAS, validate_custom
from tests.deploy.kustomize import containers, load_resources, render, split_image
from tests.deploy.netpol import selector_matches

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
FILTERS = K8S / "components" / "filters"
TARGETS = ("base", "overlays/dev", "overlays/production")
NAMESPACE = "mailmoat"
K8S_VERSIONS = ("1.29", kubernetes_validate.utils.latest_version())
IMAGE = "mailmoat"
# Secrets the cluster must provide (everything else the manifests or operators create).
REQUIRED_SECRETS = {"mailmoat-redis-auth", "mailmoat-postgres-app"}
OPTIONAL_SECRETS = {"mailmoat-console-oidc"}
"""Secrets an operator may create to turn a feature on (the console's OpenID Connect sign-in): optional references."""
NOT_CONSUMERS = {"ingress", "console"}
"""Services that consume no queue (SMTP in, HTTP in): they scale on CPU and read no queue of their own."""
SIZE_SUFFIXES = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30,
                 "Ti": 2**40}

Resource = dict[str, Any]


@cache
def _render(target: str, filters: bool) -> tuple[Resource, ...]:
    return tuple(render(K8S / target, [FILTERS] if filters else None))


CASES = [(t, f) for t in TARGETS for f in (False, True)]


@pytest.fixture(params=CASES, ids=[f"{t}{'+filters' if f else ''}" for t, f in CASES])
def resources(request: pytest.FixtureRequest) -> tuple[Resource, ...]:
    return _render(*request.param)


def quantity(value: str | int) -> float:
    match = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(value))
    assert match, f"not a quantity: {value}"
    return float(match.group(1)) * SIZE_SUFFIXES.get(match.group(2), 1)


def of_kind(resources: tuple[Resource, ...], kind: str) -> list[Resource]:
    return [r for r in resources if r["kind"] == kind]


def named(resources: tuple[Resource, ...], kind: str, name: str) -> Resource:
    found = [r for r in of_kind(resources, kind) if r["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def services(resources: tuple[Resource, ...]) -> list[Resource]:
    """The mailmoat service Deployments."""
    return [d for d in of_kind(resources, "Deployment")
            if d["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/name") == "mailmoat"]


def app_container(deployment: Resource) -> dict[str, Any]:
    found = [c for c in containers(deployment) if split_image(c["image"])[0].rsplit("/", 1)[-1] == IMAGE]
    assert len(found) == 1, f"{deployment['metadata']['name']}: one mailmoat container expected"
    return found[0]


def module_of(deployment: Resource) -> str:
    return deployment["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"].replace("-", "_")


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e for e in container.get("env", [])}


def pod_labels(workload: Resource) -> dict[str, str]:
    return workload["spec"]["template"]["metadata"]["labels"]


def pod_spec(workload: Resource) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]


# --- schemas -------------------------------------------------------------------------------------------


@cache
def _k8s_errors(serialized: str, version: str) -> str | None:
    """kubernetes-validate's verdict on one object (cached: the overlays share most objects)."""
    resource = json.loads(serialized)
    try:
        kubernetes_validate.validate(resource, version, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        return f"{resource['apiVersion']} {resource['kind']} has no schema"
    except kubernetes_validate.ValidationError as exc:
        return f"{'.'.join(map(str, exc.path))}: {exc.message}"
    return None


def test_every_object_validates(resources: tuple[Resource, ...]) -> None:
    for resource in resources:
        where = f"{resource['kind']}/{resource['metadata']['name']}"
        if (resource["apiVersion"], resource["kind"]) in SCHEMAS:
            validate_custom(resource)
            continue
        for version in K8S_VERSIONS:
            error = _k8s_errors(json.dumps(resource, sort_keys=True), version)
            assert error is None, f"{where} (Kubernetes {version}): {error}"


def test_validation_rejects_mistakes() -> None:
    """The validators used above do fail: a typo in a Deployment and in a ScaledObject."""
    deployment = json.loads(json.dumps(named(_render("base", False), "Deployment", "mailmoat-routing")))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[0], strict=True)
    scaled = json.loads(json.dumps(named(_render("base", False), "ScaledObject", "mailmoat-routing")))
    scaled["spec"]["minReplicas"] = 2
    with pytest.raises(Exception, match="minReplicas"):
        validate_custom(scaled)
    scaled = json.loads(json.dumps(named(_render("base", False), "ScaledObject", "mailmoat-routing")))
    scaled["spec"]["triggers"][0]["metadata"]["value"] = 200
    with pytest.raises(Exception, match="string"):
        validate_custom(scaled)


def test_every_manifest_file_is_rendered() -> None:
    """No manifest sits unreferenced (and so unvalidated) beside a kustomization."""
    for directory in (K8S / "base", FILTERS):
        kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
        listed = {(directory / r).resolve() for r in kustomization.get("resources", [])}
        for path in directory.glob("*.yaml"):
            if path.name != "kustomization.yaml" and path.name != "policy.yaml":
                assert path.resolve() in listed, f"{path.relative_to(REPO)} is not in its kustomization"
                assert load_resources(path)


def test_namespace(resources: tuple[Resource, ...]) -> None:
    for resource in resources:
        assert resource["metadata"].get("namespace") == NAMESPACE, resource["metadata"]["name"]


# --- the services ---------------------------------------------------------------------------------------


def test_one_deployment_per_service(resources: tuple[Resource, ...]) -> None:
    modules = sorted(module_of(d) for d in services(resources))
    expected = {"ingress", "routing", "egress"}
    assert expected <= set(modules)
    assert set(modules) <= set(SERVICES) - {"devmailbox"}
    assert len(modules) == len(set(modules))


def test_service_containers(resources: tuple[Resource, ...]) -> None:
    for deployment in services(resources):
        module = module_of(deployment)
        container = app_container(deployment)
        assert container["args"] == ["run", module]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["metrics"] == DEFAULT_METRICS_PORTS[module]
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
        env = env_of(container)
        assert env["OTEL_SERVICE_NAME"]["value"] == f"mailmoat-{deployment['metadata']['name'].split('-', 1)[1]}"
        assert env["OTEL_SERVICE_NAME"]["value"] == otel_service_name(module)  # as `mailmoat run all` names it
        assert {"MAILMOAT_AMQP_URL", "MAILMOAT_REDIS_URL", "MAILMOAT_POLICY"} <= set(env)
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"].endswith(":4318")  # OTLP over HTTP


def test_env_references_and_backends(resources: tuple[Resource, ...]) -> None:
    """$(VAR) only names variables defined earlier (Kubernetes expands nothing else), the URLs name
    the broker and Redis this render creates, and every Secret is created or documented."""
    clusters = {r["metadata"]["name"] for r in of_kind(resources, "RabbitmqCluster")}
    service_names = {r["metadata"]["name"] for r in of_kind(resources, "Service")}
    users = {f"{u['metadata']['name']}-user-credentials" for u in of_kind(resources, "User")}
    certificates = {c["spec"]["secretName"] for c in of_kind(resources, "Certificate")}
    for deployment in services(resources):
        container = app_container(deployment)
        defined: set[str] = set()
        for entry in container["env"]:
            for ref in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", entry.get("value", "")):
                assert ref in defined, f"{deployment['metadata']['name']}: {entry['name']} uses $({ref}) before it"
            secret = entry.get("valueFrom", {}).get("secretKeyRef")
            if secret:
                assert secret["name"] in users | REQUIRED_SECRETS | OPTIONAL_SECRETS
                assert secret["name"] not in OPTIONAL_SECRETS or secret.get("optional") is True
            defined.add(entry["name"])
        env = env_of(container)
        amqp = re.fullmatch(r"amqps://\$\(\w+\):\$\(\w+\)@([^.:/]+)\.([^.]+)\.svc:5671/\?cafile=(\S+)",
                            env["MAILMOAT_AMQP_URL"]["value"])
        assert amqp and amqp.group(1) in clusters and amqp.group(2) == NAMESPACE
        cafile = PurePosixPath(amqp.group(3))
        mount = next(m for m in container["volumeMounts"] if cafile.is_relative_to(m["mountPath"]))
        volume = next(v for v in pod_spec(deployment)["volumes"] if v["name"] == mount["name"])
        assert volume["secret"]["secretName"] in certificates
        redis = re.fullmatch(r"redis://:\$\(\w+\)@([^:/]+):6379/\d+", env["MAILMOAT_REDIS_URL"]["value"])
        assert redis and redis.group(1) in service_names


def test_policy_mounted_from_configmap(resources: tuple[Resource, ...]) -> None:
    configmaps = {c["metadata"]["name"]: c for c in of_kind(resources, "ConfigMap")}
    for deployment in services(resources):
        container = app_container(deployment)
        path = PurePosixPath(env_of(container)["MAILMOAT_POLICY"]["value"])
        assert str(path) == "/etc/mailmoat/policy.yaml"
        mounts = [m for m in container["volumeMounts"] if m["mountPath"] == str(path.parent)]
        assert len(mounts) == 1 and "subPath" not in mounts[0], "mount the directory: subPath mounts never update"
        volume = next(v for v in pod_spec(deployment)["volumes"] if v["name"] == mounts[0]["name"])
        assert path.name in configmaps[volume["configMap"]["name"]]["data"]


def test_policy_configmap_is_the_example_policy(resources: tuple[Resource, ...]) -> None:
    text = named(resources, "ConfigMap", "mailmoat-policy")["data"]["policy.yaml"]
    example = (REPO / "config" / "policy.example.yaml").read_text()
    assert text == example, "copy config/policy.example.yaml to deploy/k8s/base/policy.yaml"
    parse_policy(text, "deploy/k8s/base/policy.yaml")


def test_security_context(resources: tuple[Resource, ...]) -> None:
    for workload in [*services(resources), *of_kind(resources, "StatefulSet")]:
        name = workload["metadata"]["name"]
        pod = pod_spec(workload)
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] != 0, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert pod.get("automountServiceAccountToken") is False, name
        for container in containers(workload):
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"]["drop"] == ["ALL"], name
            requests, limits = container["resources"]["requests"], container["resources"]["limits"]
            for resource in ("cpu", "memory"):
                assert quantity(requests[resource]) <= quantity(limits[resource]), f"{name}: {resource}"
        app = app_container(workload) if workload["kind"] == "Deployment" else containers(workload)[0]
        context = app["securityContext"]
        assert context["readOnlyRootFilesystem"] is True and context["runAsNonRoot"] is True, name
        assert "add" not in context["capabilities"], name
        if workload["kind"] == "Deployment":
            tmp = next(m for m in app["volumeMounts"] if m["mountPath"] == "/tmp")
            assert "emptyDir" in next(v for v in pod["volumes"] if v["name"] == tmp["name"])


def test_grace_period_covers_in_flight_work(resources: tuple[Resource, ...]) -> None:
    consumer_grace = inspect.signature(Runtime.shutdown).parameters["grace"].default
    ingress_grace = inspect.signature(IngressServer.__init__).parameters["grace"].default
    for deployment in services(resources):
        container = app_container(deployment)
        pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
        sleep = int(pre_stop[1]) if pre_stop[:1] == ["sleep"] else 0
        # ingress: its sessions' grace, then up to 5 s for the trace writes of the last messages
        needed = sleep + (ingress_grace + 5 if module_of(deployment) == "ingress" else consumer_grace)
        assert pod_spec(deployment)["terminationGracePeriodSeconds"] > needed, deployment["metadata"]["name"]


def test_each_service_has_one_autoscaler_and_no_fixed_replicas(resources: tuple[Resource, ...]) -> None:
    for deployment in services(resources):
        name = deployment["metadata"]["name"]
        hpas = [h for h in of_kind(resources, "HorizontalPodAutoscaler") if h["spec"]["scaleTargetRef"]["name"] == name]
        scaled = [s for s in of_kind(resources, "ScaledObject") if s["spec"]["scaleTargetRef"]["name"] == name]
        assert len(hpas) + len(scaled) == 1, name
        assert "replicas" not in deployment["spec"], f"{name}: the autoscaler owns the replica count"


@pytest.mark.parametrize("service", sorted(NOT_CONSUMERS))
def test_ingress_and_console_scale_on_cpu(resources: tuple[Resource, ...], service: str) -> None:
    hpa = named(resources, "HorizontalPodAutoscaler", f"mailmoat-{service}")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": f"mailmoat-{service}"}
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


def test_stages_scale_on_their_queue(resources: tuple[Resource, ...]) -> None:
    auths = {a["metadata"]["name"]: a for a in of_kind(resources, "TriggerAuthentication")}
    clusters = {r["metadata"]["name"] for r in of_kind(resources, "RabbitmqCluster")}
    stages = [d for d in services(resources) if module_of(d) not in NOT_CONSUMERS]
    assert {"routing", "egress"} <= {module_of(d) for d in stages}
    for deployment in stages:
        scaled = named(resources, "ScaledObject", deployment["metadata"]["name"])
        spec = scaled["spec"]
        assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
        (trigger,) = [t for t in spec["triggers"] if t["type"] == "rabbitmq"]
        metadata = trigger["metadata"]
        assert trigger["type"] == "rabbitmq" and metadata["mode"] == "QueueLength"
        # the recorder consumes the trace queue, every other stage its own
        expected = TRACE_QUEUE if module_of(deployment) == "recorder" else stage_queue(module_of(deployment))
        assert metadata["queueName"] == expected
        assert int(metadata["value"]) > 0
        # Ready and unacknowledged messages: the management API (AMQP would count ready ones only).
        assert metadata["protocol"] == "http" and metadata["vhostName"] == "/"
        # KEDA runs in another namespace: the host must carry this namespace.
        host = re.fullmatch(r"https://([^.]+)\.([^.]+)\.svc(?:\.cluster\.local)?:15671/", metadata["host"])
        assert host and host.group(1) in clusters and host.group(2) == scaled["metadata"]["namespace"]
        auth = auths[trigger["authenticationRef"]["name"]]
        refs = {r["parameter"]: r for r in auth["spec"]["secretTargetRef"]}
        assert set(refs) == {"username", "password", "ca"}
        keda_user = named(resources, "User", "mailmoat-keda")
        assert keda_user["spec"]["tags"] == ["monitoring"]
        assert {refs["username"]["name"], refs["password"]["name"]} == {"mailmoat-keda-user-credentials"}
        permission = next(p for p in of_kind(resources, "Permission") if p["spec"]["userReference"]["name"]
                          == "mailmoat-keda")
        assert set(permission["spec"]["permissions"].values()) == {"^$"}


def test_disruption_budgets_and_pod_monitors(resources: tuple[Resource, ...]) -> None:
    for deployment in services(resources):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert selector_matches(deployment["spec"]["selector"], labels)
        budgets = [p for p in of_kind(resources, "PodDisruptionBudget")
                   if selector_matches(p["spec"]["selector"], labels)]
        assert len(budgets) == 1, deployment["metadata"]["name"]
        assert budgets[0]["spec"].get("maxUnavailable") == 1
        monitors = [m for m in of_kind(resources, "PodMonitor") if selector_matches(m["spec"]["selector"], labels)]
        assert len(monitors) == 1, deployment["metadata"]["name"]
        port_names = {p["name"] for c in containers(deployment) for p in c.get("ports", [])}
        for endpoint in monitors[0]["spec"]["podMetricsEndpoints"]:
            assert endpoint["port"] in port_names and endpoint["path"] == "/metrics"


def test_ingress_load_balancer_keeps_client_ips(resources: tuple[Resource, ...]) -> None:
    deployment = named(resources, "Deployment", "mailmoat-ingress")
    service = named(resources, "Service", "mailmoat-ingress")
    assert service["spec"]["type"] == "LoadBalancer"
    assert service["spec"]["externalTrafficPolicy"] == "Local"
    assert selector_matches({"matchLabels": service["spec"]["selector"]}, pod_labels(deployment))
    container = app_container(deployment)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    (port,) = service["spec"]["ports"]
    assert port["port"] == 25 and ports[port["targetPort"]] == Settings().smtp_port
    env = env_of(container)
    assert int(env["MAILMOAT_SMTP_PORT"]["value"]) == Settings().smtp_port
    assert env["MAILMOAT_SMTP_HOST"]["value"] == "0.0.0.0"


def test_ingress_tls_from_a_secret(resources: tuple[Resource, ...]) -> None:
    deployment = named(resources, "Deployment", "mailmoat-ingress")
    container = app_container(deployment)
    env = env_of(container)
    for variable, key in (("MAILMOAT_TLS_CERT", "tls.crt"), ("MAILMOAT_TLS_KEY", "tls.key")):
        path = PurePosixPath(env[variable]["value"])
        assert path.name == key
        mount = next(m for m in container["volumeMounts"] if m["mountPath"] == str(path.parent))
        volume = next(v for v in pod_spec(deployment)["volumes"] if v["name"] == mount["name"])
        certificates = {c["spec"]["secretName"] for c in of_kind(resources, "Certificate")}
        assert volume["secret"]["secretName"] in certificates  # cert-manager issues and renews it
        assert volume["secret"]["optional"] is True  # a cluster without the Secret yet still starts ingress
        assert "subPath" not in mount  # a subPath mount never sees the renewed files


# --- state, broker, monitoring -------------------------------------------------------------------------


def redis_args(statefulset: Resource) -> list[str]:
    """redis-server's arguments, $(VAR) expanded from the container's plain env values; under Sentinel
    (a start script) the arguments the script passes."""
    container = containers(statefulset)[0]
    values = {e["name"]: e.get("value", f"<{e['name']}>") for e in container.get("env", [])}
    if "args" in container:
        args = container["args"]
    else:
        script = _render_configmap_script(statefulset, container)
        args = re.search(r"^set -- (.*?)$", script, re.M).group(1).replace('"', "").split()  # type: ignore[union-attr]
    # the pod's values: $(VAR) and $VAR from the env, ${VAR:-default} (the scripts' defaults) otherwise
    return [re.sub(r"\$\((\w+)\)|\$\{(\w+)(?::-([^}]*))?\}|\$(\w+)",
                   lambda m: values.get(m.group(1) or m.group(2) or m.group(4),
                                        m.group(0) if m.group(3) is None else m.group(3)), a)
            for a in args]


def _render_configmap_script(statefulset: Resource, container: dict[str, Any]) -> str:
    script = PurePosixPath(container["command"][-1])
    mount = next(m for m in container["volumeMounts"] if PurePosixPath(script).is_relative_to(m["mountPath"]))
    volume = next(v for v in pod_spec(statefulset)["volumes"] if v["name"] == mount["name"])
    configmap = named(_render("overlays/production", False), "ConfigMap", volume["configMap"]["name"])
    return str(configmap["data"][script.name])


def test_redis_auth_memory_and_exporter(resources: tuple[Resource, ...]) -> None:
    """A password on every node, maxmemory at most 80% of the memory limit (noeviction refuses
    writes before the kernel kills), and redis_exporter beside each node, scraped by a PodMonitor."""
    statefulset = named(resources, "StatefulSet", "mailmoat-redis")
    args = redis_args(statefulset)
    assert args[args.index("--requirepass") + 1] == "<REDIS_PASSWORD>"
    assert args[args.index("--protected-mode") + 1] == "yes"
    maxmemory = args[args.index("--maxmemory") + 1]
    number, unit = re.fullmatch(r"(\d+)(mb|gb)", maxmemory).groups()  # type: ignore[union-attr]
    limit = quantity(containers(statefulset)[0]["resources"]["limits"]["memory"])
    assert int(number) * {"mb": 2**20, "gb": 2**30}[unit] <= 0.8 * limit
    exporter = next(c for c in containers(statefulset) if "redis_exporter" in c["image"])
    monitor = named(resources, "PodMonitor", "mailmoat-redis")
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] in {p["name"] for p in exporter["ports"]}
    assert selector_matches(monitor["spec"]["selector"], pod_labels(statefulset))


def test_redis_persists_with_aof(resources: tuple[Resource, ...]) -> None:
    statefulset = named(resources, "StatefulSet", "mailmoat-redis")
    container = containers(statefulset)[0]
    args = redis_args(statefulset)
    assert args[args.index("--appendonly") + 1] == "yes"
    assert args[args.index("--maxmemory-policy") + 1] == "noeviction"
    data_dir = args[args.index("--dir") + 1]
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    assert {"name": claim["metadata"]["name"], "mountPath": data_dir} in container["volumeMounts"]
    assert quantity(claim["spec"]["resources"]["requests"]["storage"]) >= 2**30
    service = named(resources, "Service", "mailmoat-redis")
    assert service["spec"]["ports"][0]["port"] == 6379
    if statefulset["spec"]["replicas"] == 1:
        assert selector_matches({"matchLabels": service["spec"]["selector"]}, pod_labels(statefulset))
    else:  # Sentinel: the Service leads to the proxy in front of the nodes
        proxy = named(resources, "Deployment", "mailmoat-redis-proxy")
        assert selector_matches({"matchLabels": service["spec"]["selector"]}, pod_labels(proxy))


def test_production_redis_has_sentinel_on_three_nodes() -> None:
    """Three nodes on three hosts with a Sentinel each (quorum 2), a proxy listing every node and
    checking role:master, and a disruption budget that keeps the quorum through a drain."""
    resources = _render("overlays/production", False)
    statefulset = named(resources, "StatefulSet", "mailmoat-redis")
    replicas = statefulset["spec"]["replicas"]
    assert replicas == 3
    assert [c["name"] for c in containers(statefulset)] == ["redis", "exporter", "sentinel"]
    pod = pod_spec(statefulset)
    (term,) = pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert selector_matches(term["labelSelector"], pod_labels(statefulset))
    scripts = named(resources, "ConfigMap", "mailmoat-redis-sentinel")["data"]
    assert re.search(r"^sentinel monitor mailmoat \$\{MASTER\} \$\{REDIS_PORT\} 2$", scripts["start-sentinel.sh"], re.M)
    assert re.search(r'^: "\$\{REDIS_PORT:=6379\}"$', scripts["discover.sh"], re.M)
    nodes = [f"mailmoat-redis-{i}.{statefulset['spec']['serviceName']}" for i in range(replicas)]
    assert scripts["discover.sh"].count("mailmoat-redis-") >= replicas
    haproxy = named(resources, "ConfigMap", "mailmoat-redis-proxy")["data"]["haproxy.cfg"]
    assert "tcp-check expect string role:master" in haproxy and "on-marked-down shutdown-sessions" in haproxy
    # ${VAR-default}: the environment overrides the pod's default (the loopback drill, tests/drills)
    haproxy = re.sub(r"\$\{\w+-([^}]*)\}", r"\1", haproxy)
    assert re.findall(r'^\s*server \S+ "?([^\s"]+):6379"?', haproxy, re.M) == nodes
    assert named(resources, "PodDisruptionBudget", "mailmoat-redis")["spec"] == {
        "minAvailable": 2, "selector": statefulset["spec"]["selector"]}
    assert "--masterauth" in redis_args(statefulset)
    # a primary cut off from its replicas refuses writes: none acknowledged and then lost in a
    # switchover or a healed partition (tests/drills/redis_sentinel.py)
    args = redis_args(statefulset)
    assert args[args.index("--min-replicas-to-write") + 1] == "1"
    for container in containers(statefulset):  # Guaranteed QoS: last to be evicted under node pressure
        assert container["resources"]["requests"] == container["resources"]["limits"], container["name"]


def test_rabbitmq_survives_a_drain_and_speaks_tls_only(resources: tuple[Resource, ...]) -> None:
    cluster = named(resources, "RabbitmqCluster", "mailmoat-rabbitmq")
    spec = cluster["spec"]
    name, tag, *_ = split_image(spec["image"])
    assert name == "rabbitmq" and re.fullmatch(r"\d+\.\d+\.\d+-management", tag), "pin the broker's version"
    assert spec["tls"] == {"secretName": "mailmoat-rabbitmq-tls", "disableNonTLSListeners": True}
    certificate = next(c for c in of_kind(resources, "Certificate")
                       if c["spec"]["secretName"] == "mailmoat-rabbitmq-tls")
    assert f"mailmoat-rabbitmq.{NAMESPACE}.svc" in certificate["spec"]["dnsNames"]
    (term,) = spec["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"]["matchLabels"] == {"app.kubernetes.io/name": cluster["metadata"]["name"]}
    budget = named(resources, "PodDisruptionBudget", "mailmoat-rabbitmq")
    assert budget["spec"]["maxUnavailable"] == 1
    # The operator's pods are made restricted through the override (its defaults are not).
    pod = spec["override"]["statefulSet"]["spec"]["template"]["spec"]
    assert pod["securityContext"] == {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    for container in [*pod["initContainers"], *pod["containers"]]:
        assert container["securityContext"] == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    assert {c["name"] for c in pod["containers"]} == {"rabbitmq"}
    assert {c["name"] for c in pod["initContainers"]} == {"setup-container"}
    assert budget["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": cluster["metadata"]["name"]}


def test_one_rabbitmq_user_per_service_with_least_permissions(resources: tuple[Resource, ...]) -> None:
    """Each service logs in as its own user; it reads its own queue only, writes only through the
    default exchange and to mailmoat.dead, and configures only mailmoat objects."""
    permissions = {p["spec"]["userReference"]["name"]: p["spec"]["permissions"]
                   for p in of_kind(resources, "Permission")}
    seen = set()
    for deployment in services(resources):
        env = env_of(app_container(deployment))
        secret = env["RABBITMQ_USERNAME"]["valueFrom"]["secretKeyRef"]["name"]
        assert env["RABBITMQ_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == secret
        user = secret.removesuffix("-user-credentials")
        assert user == deployment["metadata"]["name"] and user not in seen
        seen.add(user)
        granted = permissions[user]
        # the recorder reads the trace queue, a stage its own
        queue = TRACE_QUEUE if module_of(deployment) == "recorder" else stage_queue(module_of(deployment))
        queues = [*(stage_queue(s) for s in SERVICES), TRACE_QUEUE, "mailmoat.dead"]
        readable = [q for q in queues if re.fullmatch(granted["read"], q)]
        assert readable == ([] if module_of(deployment) in NOT_CONSUMERS else [queue]), user
        assert re.fullmatch(granted["write"], "amq.default") and not re.fullmatch(granted["write"], queue)
        assert not re.fullmatch(granted["configure"], "other.app") and re.fullmatch(granted["configure"], queue)


def test_probe_runs_every_minute_against_ingress_and_its_alert_names_it(resources: tuple[Resource, ...]) -> None:
    probe = named(resources, "CronJob", "mailmoat-probe")
    assert probe["spec"]["schedule"] == "* * * * *" and probe["spec"]["concurrencyPolicy"] == "Forbid"
    job = probe["spec"]["jobTemplate"]["spec"]
    assert job["activeDeadlineSeconds"] < 60 and job["backoffLimit"] == 0
    (container,) = containers(probe)
    assert container["command"] == ["python", "-m", "mailmoat_cli.probe"]
    env = env_of(container)
    host, port = env["MAILMOAT_PROBE_SMTP"]["value"].split(":")
    service = named(resources, "Service", host)
    assert int(port) in [p["port"] for p in service["spec"]["ports"]]
    assert float(env["MAILMOAT_PROBE_TIMEOUT"]["value"]) < job["activeDeadlineSeconds"]
    rules = yaml.safe_load((REPO / "deploy" / "prometheus" / "rules.yml").read_text())
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"] if r["alert"] == "MailmoatProbeFailing"]
    assert exprs and f'cronjob="{probe["metadata"]["name"]}"' in exprs[0]


def test_monitoring_objects_carry_the_release_label(resources: tuple[Resource, ...]) -> None:
    """kube-prometheus-stack's Prometheus selects monitors and rules by its Helm release label."""
    for kind in ("PodMonitor", "ServiceMonitor", "PrometheusRule"):
        for item in of_kind(resources, kind):
            assert item["metadata"]["labels"].get("release") == "kube-prometheus-stack", item["metadata"]["name"]


def test_rabbitmq_cluster_and_its_metrics(resources: tuple[Resource, ...]) -> None:
    cluster = named(resources, "RabbitmqCluster", "mailmoat-rabbitmq")
    assert cluster["spec"]["replicas"] % 2 == 1, "quorum queues want an odd number of nodes"
    assert quantity(cluster["spec"]["persistence"]["storage"]) >= 2**30
    monitor = named(resources, "ServiceMonitor", "mailmoat-rabbitmq")
    assert monitor["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] == cluster["metadata"]["name"]
    assert monitor["spec"]["endpoints"] == [{"port": "prometheus", "path": "/metrics/per-object", "interval": "30s"}]


def test_prometheus_rule_is_rules_yml(resources: tuple[Resource, ...]) -> None:
    rules = yaml.safe_load((REPO / "deploy" / "prometheus" / "rules.yml").read_text())
    assert named(resources, "PrometheusRule", "mailmoat")["spec"]["groups"] == rules["groups"], (
        "copy the groups of deploy/prometheus/rules.yml into deploy/k8s/base/prometheusrule.yaml"
    )


def test_dashboard_configmap_is_the_dashboard(resources: tuple[Resource, ...]) -> None:
    configmap = named(resources, "ConfigMap", "mailmoat-grafana-dashboard")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = json.loads(configmap["data"]["mailmoat.json"])
    assert shipped == json.loads((REPO / "deploy" / "grafana" / "mailmoat.json").read_text()), (
        "copy deploy/grafana/mailmoat.json to deploy/k8s/base/dashboards/mailmoat.json"
    )


# --- overlays ---------------------------------------------------------------------------------------------


def test_overlays_size_differently() -> None:
    dev, prod = _render("overlays/dev", False), _render("overlays/production", False)

    def memory_limit(resources: tuple[Resource, ...], name: str) -> float:
        return quantity(app_container(named(resources, "Deployment", name))["resources"]["limits"]["memory"])

    assert named(dev, "HorizontalPodAutoscaler", "mailmoat-ingress")["spec"]["minReplicas"] == 1
    assert named(prod, "HorizontalPodAutoscaler", "mailmoat-ingress")["spec"]["minReplicas"] >= 3
    for stage in ("mailmoat-routing", "mailmoat-egress"):
        assert (named(prod, "ScaledObject", stage)["spec"]["maxReplicaCount"]
                > named(dev, "ScaledObject", stage)["spec"]["maxReplicaCount"])
    assert named(dev, "RabbitmqCluster", "mailmoat-rabbitmq")["spec"]["replicas"] == 1
    assert named(prod, "RabbitmqCluster", "mailmoat-rabbitmq")["spec"]["replicas"] == 3
    assert memory_limit(prod, "mailmoat-ingress") > memory_limit(dev, "mailmoat-ingress")
    images = {c["image"] for d in services(prod) for c in [app_container(d)]}
    assert len(images) == 1 and split_image(images.pop())[1] == "0.1.0"


def test_filters_component_adds_the_filter_stages() -> None:
    without = {module_of(d) for d in services(_render("overlays/production", False))}
    with_filters = {module_of(d) for d in services(_render("overlays/production", True))}
    assert with_filters - without == set(filter_names())
    antivirus = named(_render("overlays/production", True), "Deployment", "mailmoat-antivirus")
    assert [c["name"] for c in containers(antivirus)] == ["antivirus"]  # no clamd of its own


def test_redis_proxy_configuration_is_valid(tmp_path: Path) -> None:
    """HAProxy's own check (haproxy -c, Debian package haproxy) on the proxy's configuration."""
    haproxy = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin")
    if haproxy is None:
        pytest.skip("haproxy is not installed (Debian package haproxy)")
    config = named(_render("overlays/production", False), "ConfigMap", "mailmoat-redis-proxy")["data"]["haproxy.cfg"]
    env = {"PATH": "/usr/bin:/bin", "REDIS_PASSWORD": "x"}
    for text, valid in ((config, True), (config.replace("tcp-check expect string", "tcp-check expct string"), False)):
        (tmp_path / "haproxy.cfg").write_text(text)
        result = subprocess.run([haproxy, "-c", "-f", str(tmp_path / "haproxy.cfg")], capture_output=True,
                                text=True, timeout=60, env=env)
        assert (result.returncode == 0) == valid, result.stdout + result.stderr


@pytest.mark.parametrize("name", ["clamd.conf", "freshclam.conf", "freshclam-mirror.conf"])
def test_clamav_configuration_parses(name: str, tmp_path: Path) -> None:
    """ClamAV's own parser (clamconf, Debian package clamav) reads the ConfigMap's files without error."""
    clamconf = shutil.which("clamconf")
    if clamconf is None:
        pytest.skip("clamconf is not installed (Debian package clamav)")
    data = named(_render("overlays/production", True), "ConfigMap", "mailmoat-clamav")["data"]
    target = "clamd.conf" if name == "clamd.conf" else "freshclam.conf"
    (tmp_path / target).write_text(data[name])
    result = subprocess.run([clamconf, "-c", str(tmp_path)], capture_output=True, text=True, timeout=60)
    output = result.stdout + result.stderr
    assert "ERROR" not in output and f"Config file: {target}" in output, output[:2000]
    (tmp_path / target).write_text(data[name] + "NoSuchOption yes\n")
    result = subprocess.run([clamconf, "-c", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert "Unknown option NoSuchOption" in result.stdout + result.stderr


def test_antivirus_does_not_scale_up_while_clamd_is_down() -> None:
    scaled = named(_render("overlays/production", True), "ScaledObject", "mailmoat-antivirus")["spec"]
    triggers = {t["name"]: t for t in scaled["triggers"]}
    formula = scaled["advanced"]["scalingModifiers"]["formula"]
    assert set(re.findall(r"[a-z_]+", formula)) == set(triggers)
    assert 'dependency="clamd"' in triggers["clamd_up"]["metadata"]["query"]
    assert formula == "clamd_up < 1 ? 0 : backlog"


def test_filter_stages_run_two_replicas_at_least() -> None:
    for name in (n.replace("_", "-") for n in filter_names()):
        assert named(_render("overlays/production", True), "ScaledObject", f"mailmoat-{name}")["spec"][
            "minReplicaCount"] >= 2


def test_one_clamd_fleet_fed_by_one_mirror() -> None:
    """Antivirus pods scan with the clamd Deployment behind its Service; clamd pods fetch the database
    from the in-cluster mirror (a native sidecar keeps it current); only the mirror uses the CDN."""
    resources = _render("overlays/production", True)
    antivirus = named(resources, "Deployment", "mailmoat-antivirus")
    address = env_of(app_container(antivirus))["MAILMOAT_CLAMD_ADDRESS"]["value"]
    host, port = address.split(":")
    service = named(resources, "Service", host)
    clamd = named(resources, "Deployment", "mailmoat-clamd")
    assert service["spec"]["selector"] == clamd["spec"]["selector"]["matchLabels"]
    assert [p["port"] for p in service["spec"]["ports"]] == [int(port)]
    pod = pod_spec(clamd)
    sidecars = [c for c in pod["initContainers"] if c.get("restartPolicy") == "Always"]
    assert [c["command"][0] for c in sidecars] == ["freshclam"]
    assert pod["initContainers"][0]["command"][0] == "freshclam"  # the database before clamd starts
    config = named(resources, "ConfigMap", "mailmoat-clamav")["data"]
    mirror = re.search(r"^PrivateMirror http://([a-z-]+):(\d+)$", config["freshclam.conf"], re.M)
    assert mirror and "DatabaseMirror" not in config["freshclam.conf"]
    mirror_service = named(resources, "Service", mirror.group(1))
    assert mirror_service["spec"]["ports"][0]["port"] == int(mirror.group(2))
    assert "DatabaseMirror database.clamav.net" in config["freshclam-mirror.conf"]
    assert "ScriptedUpdates no" in config["freshclam-mirror.conf"]  # whole .cvd files, as a mirror serves
    assert named(resources, "HorizontalPodAutoscaler", "mailmoat-clamd")["spec"]["minReplicas"] >= 2
    named(resources, "PodDisruptionBudget", "mailmoat-clamd")


def test_signing_keys_reach_every_process_that_signs(resources: tuple[Resource, ...]) -> None:
    """Routing signs, seals and rewrites; ingress does too when it routes itself or reverses SRS: both
    mount the optional key Secret read-only, outside the policy ConfigMap's directory."""
    for name in ("mailmoat-routing", "mailmoat-ingress"):
        deployment = named(resources, "Deployment", name)
        volumes = {v["name"]: v for v in pod_spec(deployment)["volumes"]}
        secret = volumes["signing-keys"]["secret"]
        assert secret["secretName"] == "mailmoat-signing-keys" and secret["optional"] is True, name
        mounts = {m["name"]: m for m in app_container(deployment)["volumeMounts"]}
        mount = mounts["signing-keys"]
        assert mount["readOnly"] is True and mount["mountPath"] == "/etc/mailmoat-keys", name
        assert not mount["mountPath"].startswith(mounts["policy"]["mountPath"] + "/"), name
