"""Rules a rendered deployment must keep, each a function of the rendered resources that returns its
violations (an empty list when the rule holds), so the rules hold for every overlay and keep
holding as the manifests change:

- ``restricted``: every container of every workload meets the ``restricted`` Pod Security Standard
  (non-root, no privilege escalation, all capabilities dropped, RuntimeDefault seccomp, no host
  namespaces or host paths) and has a read-only root filesystem;
- ``spread``: a workload running two replicas or more keeps them on different nodes;
- ``budgets``: every long-running workload on the mail path has a PodDisruptionBudget that lets a
  drain proceed and keeps one replica at least when it runs two or more;
- ``minimum_replicas``: the workloads on the mail path run ``floor`` replicas at least;
- ``network_holes``: every pod starts from deny-all in both directions; traffic from anywhere
  reaches only ingress's SMTP port; traffic to anywhere leaves only on the ports listed in
  ``OPEN_EGRESS`` and never to the link-local range; DNS goes to the cluster's resolver only.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from tests.deploy.kustomize import containers
from tests.deploy.netpol import selector_matches

Resource = dict[str, Any]

WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "CronJob", "Job")
ALLOWED_VOLUMES = {"configMap", "secret", "emptyDir", "projected", "downwardAPI", "persistentVolumeClaim",
                   "ephemeral", "csi"}
NO_BUDGET = {"mailmoat-clamav-mirror": "off the mail path: a drain only delays a signature update"}
"""Long-running workloads without a PodDisruptionBudget, with the reason."""
OPEN_INGRESS = {("mailmoat", "ingress"): {2525}}
"""(name, component) labels of pods that may be reached from anywhere, and on which ports."""
OPEN_EGRESS = {("mailmoat", "egress"): {25, 587}, ("clamav-mirror", None): {443}}
"""(name, component) labels of pods that may connect anywhere, and on which ports."""
LINK_LOCAL = (ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fe80::/10"))


def pod_template(workload: Resource) -> dict[str, Any]:
    spec = workload["spec"]
    if workload["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return spec["template"]


def workloads(resources: list[Resource]) -> list[Resource]:
    return [r for r in resources if r["kind"] in WORKLOADS]


def _name(resource: Resource) -> str:
    return f"{resource['kind']}/{resource['metadata']['name']}"


# --- restricted ----------------------------------------------------------------------------------


def restricted(resources: list[Resource]) -> list[str]:
    problems = []
    for workload in workloads(resources):
        pod = pod_template(workload)["spec"]
        pod_context = pod.get("securityContext", {})
        name = _name(workload)
        for key in ("hostNetwork", "hostPID", "hostIPC"):
            if pod.get(key):
                problems.append(f"{name}: {key}")
        for volume in pod.get("volumes", []):
            kinds = set(volume) - {"name"}
            if not kinds <= ALLOWED_VOLUMES:
                problems.append(f"{name}: volume {volume['name']} is {sorted(kinds)}")
        for container in containers(workload):
            context = container.get("securityContext", {})
            where = f"{name} container {container['name']}"

            def setting(key: str) -> Any:
                return context.get(key, pod_context.get(key))  # noqa: B023 - evaluated at once

            if setting("runAsNonRoot") is not True:
                problems.append(f"{where}: runAsNonRoot is not true")
            if setting("runAsUser") == 0:
                problems.append(f"{where}: runs as uid 0")
            if context.get("privileged"):
                problems.append(f"{where}: privileged")
            if context.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where}: allowPrivilegeEscalation is not false")
            capabilities = context.get("capabilities", {})
            if capabilities.get("drop") != ["ALL"]:
                problems.append(f"{where}: capabilities not dropped (ALL)")
            if set(capabilities.get("add", [])) - {"NET_BIND_SERVICE"}:
                problems.append(f"{where}: adds capabilities {capabilities['add']}")
            if (setting("seccompProfile") or {}).get("type") not in ("RuntimeDefault", "Localhost"):
                problems.append(f"{where}: no RuntimeDefault seccomp profile")
            if context.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{where}: root filesystem is writable")
            if "resources" not in container or "limits" not in container["resources"]:
                problems.append(f"{where}: no resource limits")
    return problems


# --- replicas, spreading, budgets ----------------------------------------------------------------


def replicas(resources: list[Resource], workload: Resource) -> int:
    """The least number of replicas a workload runs: its autoscaler's minimum, or its replicas."""
    name = workload["metadata"]["name"]
    for scaler in resources:
        target = scaler.get("spec", {}).get("scaleTargetRef", {}).get("name")
        if target == name and scaler["kind"] == "HorizontalPodAutoscaler":
            return int(scaler["spec"].get("minReplicas", 1))
        if target == name and scaler["kind"] == "ScaledObject":
            return int(scaler["spec"].get("minReplicaCount", 0))
    return int(workload["spec"].get("replicas", 1))


def long_running(resources: list[Resource]) -> list[Resource]:
    return [w for w in resources if w["kind"] in ("Deployment", "StatefulSet")]


def _spreads(workload: Resource) -> bool:
    template = pod_template(workload)
    labels, pod = template["metadata"]["labels"], template["spec"]
    anti = pod.get("affinity", {}).get("podAntiAffinity", {})
    terms = [*anti.get("requiredDuringSchedulingIgnoredDuringExecution", []),
             *(t["podAffinityTerm"] for t in anti.get("preferredDuringSchedulingIgnoredDuringExecution", []))]
    constraints = pod.get("topologySpreadConstraints", [])
    return any(t.get("topologyKey") == "kubernetes.io/hostname" and selector_matches(t.get("labelSelector"), labels)
               for t in [*terms, *constraints])


def spread(resources: list[Resource]) -> list[str]:
    problems = [f"{_name(w)}: {replicas(resources, w)} replicas without anti-affinity or a spread over nodes"
                for w in long_running(resources) if replicas(resources, w) >= 2 and not _spreads(w)]
    for cluster in (r for r in resources if r["kind"] == "RabbitmqCluster"):
        if cluster["spec"].get("replicas", 1) >= 2:
            anti = cluster["spec"].get("affinity", {}).get("podAntiAffinity", {})
            if not any(t.get("topologyKey") == "kubernetes.io/hostname"
                       for t in anti.get("requiredDuringSchedulingIgnoredDuringExecution", [])):
                problems.append(f"{_name(cluster)}: nodes may share a host (quorum lost in one drain)")
    return problems


def budgets(resources: list[Resource]) -> list[str]:
    pdbs = [r for r in resources if r["kind"] == "PodDisruptionBudget"]
    problems = []
    targets: list[tuple[str, dict[str, str], int]] = [
        (_name(w), pod_template(w)["metadata"]["labels"], replicas(resources, w)) for w in long_running(resources)
        if w["metadata"]["name"] not in NO_BUDGET]
    targets += [(_name(c), {"app.kubernetes.io/name": c["metadata"]["name"]}, int(c["spec"].get("replicas", 1)))
                for c in resources if c["kind"] == "RabbitmqCluster"]
    for name, labels, count in targets:
        matching = [p for p in pdbs if selector_matches(p["spec"]["selector"], labels)]
        if len(matching) != 1:
            problems.append(f"{name}: {len(matching)} PodDisruptionBudgets")
            continue
        spec = matching[0]["spec"]
        if "maxUnavailable" in spec:
            allowed = int(spec["maxUnavailable"])
            if allowed < 1 or (count >= 2 and allowed >= count):
                problems.append(f"{name}: maxUnavailable {allowed} of {count}")
        else:
            keep = int(spec["minAvailable"])
            if keep >= count or keep < 1:
                problems.append(f"{name}: minAvailable {keep} of {count} (a drain blocks or nothing is kept)")
    return problems


def minimum_replicas(resources: list[Resource], floor: int, exempt: frozenset[str] = frozenset()) -> list[str]:
    return [f"{_name(w)}: {replicas(resources, w)} replicas, below {floor}"
            for w in long_running(resources)
            if w["metadata"]["name"] not in exempt | set(NO_BUDGET) and replicas(resources, w) < floor]


# --- network -------------------------------------------------------------------------------------


def _key(labels: dict[str, str]) -> tuple[str | None, str | None]:
    return labels.get("app.kubernetes.io/name"), labels.get("app.kubernetes.io/component")


def _anywhere(peers: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """The peers of a rule that stand for any address (no peers at all, an empty selector pair, or
    an ipBlock of a whole address family)."""
    if not peers:
        return [{}]
    found = []
    for peer in peers:
        block = peer.get("ipBlock")
        if block and ipaddress.ip_network(block["cidr"]).prefixlen == 0:
            found.append(peer)
        elif set(peer) == {"namespaceSelector"} and not peer["namespaceSelector"]:
            found.append(peer)
    return found


def _ports(rule: dict[str, Any]) -> set[int | str] | None:
    """The ports a rule allows (None: every port)."""
    if not rule.get("ports"):
        return None
    return {p["port"] for p in rule["ports"]}


def network_holes(resources: list[Resource], namespace: str) -> list[str]:
    policies = [r for r in resources if r["kind"] == "NetworkPolicy"]
    problems = []
    for workload in workloads(resources):
        labels = pod_template(workload)["metadata"]["labels"]
        selecting = [p for p in policies if selector_matches(p["spec"]["podSelector"], labels)]
        for direction in ("Ingress", "Egress"):
            if not any(direction in p["spec"].get("policyTypes", []) for p in selecting):
                problems.append(f"{_name(workload)}: no policy restricts its {direction.lower()}")
        for policy in selecting:
            for rule in policy["spec"].get("ingress", []):
                if _anywhere(rule.get("from")):
                    ports = _ports(rule)
                    allowed = OPEN_INGRESS.get(_key(labels), set())
                    if ports is None or not ports <= allowed:
                        problems.append(f"{policy['metadata']['name']}: {_name(workload)} open to anyone on "
                                        f"{'every port' if ports is None else sorted(ports, key=str)}")
            for rule in policy["spec"].get("egress", []):
                ports = _ports(rule)
                if ports is not None and 53 in ports and not rule.get("to"):
                    problems.append(f"{policy['metadata']['name']}: DNS to any resolver from {_name(workload)}")
                wide = _anywhere(rule.get("to"))
                if not wide:
                    continue
                allowed = OPEN_EGRESS.get(_key(labels), set())
                if ports is None or not ports <= allowed:
                    problems.append(f"{policy['metadata']['name']}: {_name(workload)} reaches anywhere on "
                                    f"{'every port' if ports is None else sorted(ports, key=str)}")
                for peer in wide:
                    block = peer.get("ipBlock")
                    excepted = [ipaddress.ip_network(e) for e in (block or {}).get("except", [])]
                    if block is None or not any(
                            any(link.subnet_of(e) for e in excepted if e.version == link.version)  # type: ignore[arg-type]
                            for link in LINK_LOCAL if link.version == ipaddress.ip_network(block["cidr"]).version):
                        problems.append(f"{policy['metadata']['name']}: {_name(workload)} reaches link-local "
                                        "addresses (cloud metadata)")
    return problems
