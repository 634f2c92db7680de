"""The console on Kubernetes (deploy/k8s/base/console.yaml): its Deployment with the database Secret and its
RabbitMQ user (it publishes releases), the Service, the Ingress with TLS from a cert-manager Certificate for
the same host, and who reaches it (the ingress controller on its HTTP port, Prometheus on metrics, nobody
else)."""

from __future__ import annotations

from urllib.parse import urlsplit

from mailmoat_platform.settings import DEFAULT_METRICS_PORTS
from tests.deploy.kustomize import containers
from tests.deploy.netpol import Pod
from tests.deploy.test_netpol import INTERNET, MONITORING, NS, STRANGER, STRANGER_IN_NS, can, pod
from tests.deploy.test_records_deploy import DB_SECRET, POSTGRES, env, named, production

INGRESS_CONTROLLER = Pod("ingress-nginx", {"app.kubernetes.io/name": "ingress-nginx"})
SMTP_INGRESS_POD = "ingress"


def test_console_deployment_service_ingress_and_certificate() -> None:
    resources = production()
    deployment = named(resources, "Deployment", "mailmoat-console")
    (container,) = containers(deployment)
    assert container["args"] == ["run", "console"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8025, "metrics": DEFAULT_METRICS_PORTS["console"]}
    variables = env(container)
    assert variables["MAILMOAT_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == DB_SECRET
    assert variables["MAILMOAT_RECORDS"]["value"] == "postgresql"
    assert variables["MAILMOAT_CONSOLE_HOST"]["value"] == "0.0.0.0"
    assert variables["MAILMOAT_CONSOLE_SECURE_COOKIES"]["value"] == "true"
    host = urlsplit(variables["MAILMOAT_CONSOLE_URL"]["value"])
    assert host.scheme == "https"
    assert variables["RABBITMQ_USERNAME"]["valueFrom"]["secretKeyRef"]["name"] == "mailmoat-console-user-credentials"

    service = named(resources, "Service", "mailmoat-console")["spec"]
    assert service["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["ports"][0]["targetPort"] == "http"

    ingress = named(resources, "Ingress", "mailmoat-console")["spec"]
    (rule,) = ingress["rules"]
    assert rule["host"] == host.hostname
    assert rule["http"]["paths"][0]["backend"]["service"] == {"name": "mailmoat-console", "port": {"name": "http"}}
    (tls,) = ingress["tls"]
    assert tls["hosts"] == [host.hostname]
    certificate = named(resources, "Certificate", "mailmoat-console-tls")["spec"]
    assert certificate["secretName"] == tls["secretName"] and certificate["dnsNames"] == [host.hostname]

    permission = named(resources, "Permission", "mailmoat-console")["spec"]["permissions"]
    assert permission["read"] == r"^mailmoat\.dlx$"  # it publishes releases and consumes nothing


def test_who_reaches_the_console_and_what_it_reaches() -> None:
    console = pod("console")
    assert can(INGRESS_CONTROLLER, console, 8025)
    assert can(MONITORING, console, DEFAULT_METRICS_PORTS["console"])
    for outsider in (STRANGER, STRANGER_IN_NS, INTERNET, pod(SMTP_INGRESS_POD)):
        assert not can(outsider, console, 8025), outsider
    assert can(console, POSTGRES, 5432)
    assert not can(console, INTERNET, 443) and not can(console, INTERNET, 25)
    assert NS == named(production(), "Deployment", "mailmoat-console")["metadata"]["namespace"]
