"""deploy/k8s/components/proxy-protocol rendered offline, through the overlay its own comment shows
(with this renderer and, when installed, kubectl's kustomize): the ingress Service asks the common
cloud load balancers for PROXY headers, ingress trusts the networks the overlay's ConfigMap names
(read as ingress reads them), and every object still validates and keeps the deployment rules."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from mailmoat_ingress.proxy import TRUSTED_ENV, deployment_trusted
from tests.deploy import rules
from tests.deploy.kustomize import render
from tests.deploy.test_k8s import K8S, app_container, env_of, named, services

COMPONENT = K8S / "components" / "proxy-protocol"
ANNOTATIONS = {
    "service.beta.kubernetes.io/aws-load-balancer-proxy-protocol": "*",
    "service.beta.kubernetes.io/do-loadbalancer-enable-proxy-protocol": "true",
    "load-balancer.hetzner.cloud/uses-proxyprotocol": "true",
    "service.beta.kubernetes.io/linode-loadbalancer-default-proxy-protocol": "v2",
    "service.beta.kubernetes.io/scw-loadbalancer-proxy-protocol-v2": "*",
}

Resource = dict[str, Any]


def example_overlay() -> str:
    """The overlay the component's comment tells operators to write."""
    text = (COMPONENT / "kustomization.yaml").read_text()
    after = text.split("In your overlay", 1)[1].splitlines()[2:]  # past the marker's line and a "#"
    lines = []
    for line in after:
        if not line.startswith("#   "):
            break
        lines.append(line.removeprefix("#   "))
    return "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n" + "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of deploy/k8s with the example overlay beside production."""
    root = tmp_path_factory.mktemp("k8s") / "k8s"
    shutil.copytree(K8S, root)
    (root / "overlays" / "proxied").mkdir()
    (root / "overlays" / "proxied" / "kustomization.yaml").write_text(example_overlay())
    return root


@pytest.fixture(scope="module")
def resources(tree: Path) -> tuple[Resource, ...]:
    return tuple(render(tree / "overlays" / "proxied"))


def test_the_example_overlay_is_a_real_one() -> None:
    doc = yaml.safe_load(example_overlay())
    assert doc["components"] == ["../../components/proxy-protocol"] and doc["resources"] == ["../production"]
    assert doc["configMapGenerator"][0]["name"] == "mailmoat-proxy-protocol"


def test_the_load_balancer_sends_proxy_headers(resources: tuple[Resource, ...]) -> None:
    service = named(resources, "Service", "mailmoat-ingress")
    assert service["metadata"]["annotations"] == ANNOTATIONS
    assert service["spec"]["externalTrafficPolicy"] == "Local"  # the balancer's health checks stay per node


def test_ingress_trusts_the_overlays_networks(resources: tuple[Resource, ...]) -> None:
    (ingress,) = [d for d in services(resources) if d["metadata"]["name"] == "mailmoat-ingress"]
    reference = env_of(app_container(ingress))[TRUSTED_ENV]["valueFrom"]["configMapKeyRef"]
    assert "optional" not in reference  # no ConfigMap: the new pods wait, the old ones serve
    data = named(resources, "ConfigMap", reference["name"])["data"]
    trusted = deployment_trusted({TRUSTED_ENV: data[reference["key"]]})
    assert trusted is not None and trusted.trusted("10.20.17.4") and not trusted.trusted("10.21.0.1")
    others = [d for d in services(resources) if d["metadata"]["name"] != "mailmoat-ingress"]
    assert others and all(TRUSTED_ENV not in env_of(app_container(d)) for d in others)


def test_objects_validate_and_rules_hold(resources: tuple[Resource, ...]) -> None:
    version = kubernetes_validate.utils.latest_version()
    for kind, name in (("Service", "mailmoat-ingress"), ("Deployment", "mailmoat-ingress"),
                       ("ConfigMap", "mailmoat-proxy-protocol")):
        kubernetes_validate.validate(named(resources, kind, name), version, strict=True)
    assert rules.restricted(list(resources)) == []
    assert rules.network_holes(list(resources), "mailmoat") == []


def test_kubectl_kustomize_renders_the_same(tree: Path, resources: tuple[Resource, ...]) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    result = subprocess.run([kubectl, "kustomize", str(tree / "overlays" / "proxied")], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    theirs = [r for r in yaml.safe_load_all(result.stdout) if r]
    for kind, name in (("Service", "mailmoat-ingress"), ("Deployment", "mailmoat-ingress"),
                       ("ConfigMap", "mailmoat-proxy-protocol")):
        assert named(tuple(theirs), kind, name) == named(resources, kind, name), (kind, name)


def test_an_empty_placeholder_keeps_ingress_from_starting() -> None:
    with pytest.raises(ValueError, match=re.escape(TRUSTED_ENV)):
        deployment_trusted({TRUSTED_ENV: ""})
