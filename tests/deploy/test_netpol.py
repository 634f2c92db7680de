"""Who can reach whom under deploy/k8s's NetworkPolicies: each mailmoat pod reaches only what it must."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import pytest

from deploy.generate import component, deploy_settings
from mailmoat_platform.settings import DEFAULT_METRICS_PORTS
from mailmoat_platform.stages import filter_names, filters
from tests.deploy.kustomize import containers, render
from tests.deploy.netpol import External, Pod, allowed

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
NS = "mailmoat"
INTERNET = External("203.0.113.7")
INTERNET6 = External("2001:db8::25")
MONITORING = Pod("monitoring", {"app.kubernetes.io/name": "prometheus"})
KEDA = Pod("keda", {"app": "keda-operator"})
STRANGER = Pod("default", {"app": "something-else"})
STRANGER_IN_NS = Pod(NS, {"app": "debug"})
KUBE_DNS = Pod("kube-system", {"k8s-app": "kube-dns"}, {"dns": 53})
# Labels and ports the RabbitMQ Cluster Operator gives the broker's pods.
RABBITMQ = Pod(NS, {"app.kubernetes.io/name": "mailmoat-rabbitmq", "app.kubernetes.io/component": "rabbitmq",
                    "app.kubernetes.io/part-of": "rabbitmq"},
               {"amqps": 5671, "management-tls": 15671, "prometheus": 15692, "epmd": 4369, "cluster-links": 25672})


@cache
def world() -> tuple[list[dict[str, Any]], dict[str, Pod]]:
    """The NetworkPolicies and the pods of the production overlay with the filter stages."""
    resources = render(K8S / "overlays" / "production", [K8S / "components" / "filters"])
    pods = {}
    for workload in resources:
        if workload["kind"] in ("Deployment", "StatefulSet"):
            ports = {p["name"]: p["containerPort"] for c in containers(workload) for p in c.get("ports", [])}
            labels = workload["spec"]["template"]["metadata"]["labels"]
            name = labels.get("app.kubernetes.io/component") or labels["app.kubernetes.io/name"]
            pods[name] = Pod(workload["metadata"]["namespace"], labels, ports)
    return [r for r in resources if r["kind"] == "NetworkPolicy"], pods


def pod(name: str) -> Pod:
    return world()[1][name]


def can(source: Pod | External, destination: Pod | External, port: int, protocol: str = "TCP") -> bool:
    return allowed(world()[0], source, destination, port, protocol)


FILTERS = [name.replace("_", "-") for name in filter_names()]
APP = ["ingress", "routing", "egress", *FILTERS]


def test_world_has_the_pods() -> None:
    assert set(APP) | {"redis", "redis-proxy", "clamd", "clamav-mirror"} <= set(world()[1])


@pytest.mark.parametrize("name", APP)
def test_every_service_reaches_dns_broker_and_redis(name: str) -> None:
    assert can(pod(name), KUBE_DNS, 53, "UDP")
    assert can(pod(name), KUBE_DNS, 53, "TCP")
    assert can(pod(name), RABBITMQ, 5671)
    assert not can(pod(name), RABBITMQ, 5672)  # AMQP without TLS is closed
    # Production runs Redis under Sentinel: the services reach the proxy, the proxy the nodes.
    assert can(pod(name), pod("redis-proxy"), 6379)
    assert not can(pod(name), pod("redis"), 6379)
    assert not can(pod(name), pod("redis"), 26379)
    assert not can(pod(name), RABBITMQ, 15672)


@pytest.mark.parametrize("name", APP)
def test_metrics_only_from_monitoring(name: str) -> None:
    port = DEFAULT_METRICS_PORTS[name.replace("-", "_")]
    assert can(MONITORING, pod(name), port)
    assert not can(STRANGER, pod(name), port)
    assert not can(INTERNET, pod(name), port)
    assert not can(STRANGER_IN_NS, pod(name), port)


def test_smtp_in_only_at_ingress() -> None:
    assert can(INTERNET, pod("ingress"), 2525)
    assert can(INTERNET6, pod("ingress"), 2525)
    assert can(STRANGER, pod("ingress"), 2525)
    for name in APP[1:]:
        assert not can(INTERNET, pod(name), 2525)


def test_smtp_out_only_from_egress() -> None:
    for port in (25, 587):
        assert can(pod("egress"), INTERNET, port)
        assert can(pod("egress"), INTERNET6, port)
    assert not can(pod("egress"), INTERNET, 443)
    for name in APP:
        assert name == "egress" or not can(pod(name), INTERNET, 25), name


def test_only_the_mirror_fetches_signatures() -> None:
    assert can(pod("clamav-mirror"), INTERNET, 443)
    assert not can(pod("clamav-mirror"), External("10.1.2.3"), 443)
    for name in (*APP, "clamd"):
        assert not can(pod(name), INTERNET, 443), name


def test_clamd_fleet_paths() -> None:
    assert can(pod("antivirus"), pod("clamd"), 3310)
    assert can(pod("clamd"), pod("clamav-mirror"), 8080)
    assert can(pod("clamd"), KUBE_DNS, 53, "UDP")
    for name in APP:
        assert name == "antivirus" or not can(pod(name), pod("clamd"), 3310), name
    assert not can(pod("antivirus"), pod("clamav-mirror"), 8080)
    assert not can(STRANGER_IN_NS, pod("clamd"), 3310)
    assert not can(pod("clamd"), INTERNET, 443)


def test_prometheus_in_any_namespace_scrapes_metrics() -> None:
    elsewhere = Pod("observability", {"app.kubernetes.io/name": "prometheus"})
    assert can(elsewhere, pod("ingress"), DEFAULT_METRICS_PORTS["ingress"])
    assert can(elsewhere, pod("redis"), 9121) and can(MONITORING, pod("redis"), 9121)
    assert can(elsewhere, RABBITMQ, 15692)
    assert not can(Pod("monitoring", {"app.kubernetes.io/name": "grafana"}), pod("ingress"), 9110)
    assert not can(STRANGER, pod("redis"), 9121)


def test_dns_only_to_the_cluster_resolver_and_traces_to_a_collector() -> None:
    collector = Pod("observability", {"app.kubernetes.io/name": "opentelemetry-collector"})
    for name in APP:
        assert not can(pod(name), INTERNET, 53, "UDP"), name
        assert can(pod(name), collector, 4318), name
        assert not can(pod(name), collector, 4317), name


def test_no_smtp_to_the_metadata_endpoint() -> None:
    assert can(pod("egress"), External("10.20.30.40"), 25)  # an on-premises smart host
    assert not can(pod("egress"), External("169.254.169.254"), 25)
    assert not can(pod("egress"), External("169.254.169.254"), 80)


def test_antispam_reaches_its_engines() -> None:
    rspamd, spamd = Pod(NS, {"app.kubernetes.io/name": "rspamd"}), Pod(NS, {"app.kubernetes.io/name": "spamd"})
    assert can(pod("antispam"), rspamd, 11333) and can(pod("antispam"), spamd, 783)
    assert not can(pod("antivirus"), rspamd, 11333) and not can(pod("antispam"), spamd, 11333)


def test_filter_stages_reach_what_the_registry_declares() -> None:
    """Each stage's [stage.deploy] egress opens its targets to that stage alone."""
    declared = [(spec, rule) for spec in filters() for egress in deploy_settings(spec).egress for rule in egress.to]
    assert declared
    for spec, rule in declared:
        target = Pod(NS, rule.pods)
        for name in APP:
            assert can(pod(name), target, rule.port, rule.protocol) == (name == component(spec)), (name, rule)
        assert not can(pod(component(spec)), target, rule.port + 1, rule.protocol)


def test_probe_reaches_ingress_and_the_trace_only() -> None:
    probe = Pod(NS, {"app.kubernetes.io/name": "mailmoat-probe", "app.kubernetes.io/part-of": "mailmoat"})
    assert can(probe, pod("ingress"), 2525)
    # the trace in PostgreSQL (MAILMOAT_RECORDS=postgresql), no longer in Redis
    postgres = Pod(NS, {"cnpg.io/cluster": "mailmoat-postgres", "cnpg.io/instanceRole": "primary"},
                   {"postgresql": 5432})
    assert can(probe, postgres, 5432)
    assert not can(probe, pod("redis-proxy"), 6379) and not can(probe, pod("redis"), 6379)
    assert can(probe, KUBE_DNS, 53, "UDP")
    assert not can(probe, RABBITMQ, 5671)
    assert not can(probe, pod("egress"), DEFAULT_METRICS_PORTS["egress"])
    assert not can(probe, INTERNET, 25) and not can(probe, INTERNET, 443)


def test_redis_sentinel_paths() -> None:
    assert can(pod("redis-proxy"), pod("redis"), 6379)
    assert not can(pod("redis-proxy"), pod("redis"), 26379)
    assert can(pod("redis"), pod("redis"), 6379) and can(pod("redis"), pod("redis"), 26379)
    assert not can(STRANGER_IN_NS, pod("redis-proxy"), 6379)
    assert not can(pod("redis"), INTERNET, 443)


def test_backends_closed_to_others() -> None:
    assert not can(STRANGER, pod("redis"), 6379)
    assert not can(STRANGER_IN_NS, pod("redis"), 6379)
    assert not can(pod("redis"), INTERNET, 443)
    assert not can(STRANGER, RABBITMQ, 5671)
    assert can(KEDA, RABBITMQ, 15671) and not can(KEDA, RABBITMQ, 5671)
    assert can(MONITORING, RABBITMQ, 15692)
    assert can(RABBITMQ, RABBITMQ, 25672)
    assert can(RABBITMQ, RABBITMQ, 35675)
    assert not can(KEDA, RABBITMQ, 15692)


def test_evaluator_semantics() -> None:
    """The evaluator itself: unselected pods are open, named ports resolve on the destination,
    ipBlock except, both sides must allow."""
    a, b = Pod("x", {"app": "a"}), Pod("x", {"app": "b"}, {"web": 8080})
    assert allowed([], a, b, 1)
    deny_b = {"kind": "NetworkPolicy", "metadata": {"namespace": "x"},
              "spec": {"podSelector": {"matchLabels": {"app": "b"}}, "policyTypes": ["Ingress"]}}
    assert not allowed([deny_b], a, b, 8080)
    allow_web = {"kind": "NetworkPolicy", "metadata": {"namespace": "x"},
                 "spec": {"podSelector": {"matchLabels": {"app": "b"}},
                          "ingress": [{"from": [{"podSelector": {"matchExpressions": [
                              {"key": "app", "operator": "In", "values": ["a"]}]}}], "ports": [{"port": "web"}]}]}}
    assert allowed([deny_b, allow_web], a, b, 8080)
    assert not allowed([deny_b, allow_web], a, b, 8081)
    assert not allowed([deny_b, allow_web], Pod("y", {"app": "a"}), b, 8080)
    egress_block = {"kind": "NetworkPolicy", "metadata": {"namespace": "x"},
                    "spec": {"podSelector": {}, "policyTypes": ["Egress"],
                             "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]}}]}]}}
    assert allowed([egress_block], a, External("192.0.2.1"), 25)
    assert not allowed([egress_block], a, External("10.1.2.3"), 25)
    assert not allowed([egress_block], a, b, 8080)
