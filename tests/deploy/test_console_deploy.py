"""The console on Kubernetes (deploy/k8s/base/console.yaml): its Deployment with the database Secret and its
RabbitMQ user (it publishes releases), the Service, the Ingress with TLS from a cert-manager Certificate for
the same host, and who reaches it (the ingress controller on its HTTP port, Prometheus on metrics, nobody
else); OpenID Connect sign-in from an optional Secret, and HTTPS out to the provider's addresses only."""

from __future__ import annotations

from urllib.parse import urlsplit

from mailmoat_console.oidc import OidcConfig
from mailmoat_console.rights import Role
from mailmoat_platform.settings import DEFAULT_METRICS_PORTS
from tests.deploy.kustomize import containers
from tests.deploy.netpol import External, Pod
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


OIDC_SECRET = "mailmoat-console-oidc"
PROVIDER = External("192.0.2.10")
"""An address of the placeholder range the console's OpenID Connect NetworkPolicy opens to HTTPS."""


def _oidc_env(container: dict, secret: dict[str, str] | None) -> dict[str, str]:
    """The console's MAILMOAT_CONSOLE_OIDC_* as the kubelet sets them, the Secret present (``secret``) or not."""
    found = {}
    for name, entry in env(container).items():
        if not name.startswith("MAILMOAT_CONSOLE_OIDC_"):
            continue
        if "value" in entry:
            found[name] = entry["value"]
            continue
        ref = entry["valueFrom"]["secretKeyRef"]
        assert ref["name"] == OIDC_SECRET and ref["optional"] is True, name  # the pod starts without it
        if secret is not None and ref["key"] in secret:
            found[name] = secret[ref["key"]]
    return found


def test_openid_connect_from_an_optional_secret(tmp_path) -> None:
    """Without the Secret mailmoat-console-oidc the console starts with local sign-in only; with it, the Secret's
    keys are the settings and its client-secret the mounted file the console reads."""
    deployment = named(production(), "Deployment", "mailmoat-console")
    (container,) = containers(deployment)
    pod_spec = deployment["spec"]["template"]["spec"]
    (volume,) = [v for v in pod_spec["volumes"] if v.get("secret", {}).get("secretName") == OIDC_SECRET]
    assert volume["secret"]["optional"] is True
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
    (item,) = volume["secret"]["items"]
    assert item["key"] == "client-secret" and mount["readOnly"] is True
    assert OidcConfig.from_env(_oidc_env(container, None)) is None

    secret = {"issuer": "https://login.example.com/realms/mail", "client-id": "mailmoat-console",
              "client-secret": "s3cret\n", "roles": "mail-admins=admin,helpdesk=helpdesk"}
    variables = _oidc_env(container, secret)
    assert variables["MAILMOAT_CONSOLE_OIDC_CLIENT_SECRET_FILE"] == f"{mount['mountPath']}/{item['path']}"
    (tmp_path / item["path"]).write_text(secret["client-secret"])
    variables["MAILMOAT_CONSOLE_OIDC_CLIENT_SECRET_FILE"] = str(tmp_path / item["path"])  # the mounted file
    config = OidcConfig.from_env(variables)
    assert config is not None and config.issuer == secret["issuer"] and config.client_id == "mailmoat-console"
    assert config.client_secret == "s3cret" and config.roles == {"mail-admins": Role.admin, "helpdesk": Role.helpdesk}


def test_the_console_reaches_the_openid_provider_on_https_only() -> None:
    """The placeholder range an operator replaces with the provider's addresses: HTTPS from the console only."""
    console = pod("console")
    assert can(console, PROVIDER, 443)
    assert not can(console, PROVIDER, 80) and not can(console, PROVIDER, 25)
    assert not can(console, INTERNET, 443)
    for other in ("ingress", "routing", "egress", "recorder"):
        assert not can(pod(other), PROVIDER, 443), other
    policy = named(production(), "NetworkPolicy", "mailmoat-console-oidc")["spec"]
    assert policy["policyTypes"] == ["Egress"] and "ingress" not in policy
