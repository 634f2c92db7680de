"""Minimal structural schemas for the custom resources deploy/k8s uses (their CRDs are not shipped
with kubernetes-validate, and no PyPI or Debian package carries them; written down here from the
operators' API references: KEDA, Prometheus Operator, RabbitMQ Cluster and Messaging Topology
Operators, cert-manager): required fields, types, and no unknown keys where a typo would silently
disable something (a misspelt ``minReplicaCount`` is ignored by the API server).

CloudNativePG's (Cluster, ScheduledBackup, and the Barman Cloud plugin's ObjectStore) come from the
operators' released CRD manifests instead, vendored in tests/data/crds/cloudnative-pg.json by
``tests.deploy.vendor_crds`` (its ``source`` names the releases): their structural schemas, made strict
(an unknown field, which the API server would prune silently, is an error here)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema

STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
DURATION = {"type": "string", "pattern": r"^([0-9]+(ms|s|m|h|d|w|y))+$"}
QUANTITY = {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?(m|k|Ki|Mi|Gi|Ti|M|G|T)?$"}
LABEL_SELECTOR = {
    "type": "object",
    "properties": {"matchLabels": STRING_MAP, "matchExpressions": {"type": "array"}},
    "additionalProperties": False,
    "minProperties": 1,
}
RESOURCES = {
    "type": "object",
    "properties": {
        "requests": {"type": "object", "additionalProperties": {"type": ["string", "integer"]}},
        "limits": {"type": "object", "additionalProperties": {"type": ["string", "integer"]}},
    },
    "additionalProperties": False,
}
METADATA = {
    "type": "object",
    "required": ["name"],
    "properties": {"name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"},
                   "namespace": {"type": "string"}, "labels": STRING_MAP, "annotations": STRING_MAP},
}


def _resource(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {"apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": METADATA,
                       "spec": spec},
        "additionalProperties": False,
    }


SCALED_OBJECT = _resource({
    "type": "object",
    "required": ["scaleTargetRef", "triggers"],
    "properties": {
        "scaleTargetRef": {
            "type": "object", "required": ["name"], "additionalProperties": False,
            "properties": {"name": {"type": "string"}, "kind": {"type": "string"}, "apiVersion": {"type": "string"},
                           "envSourceContainerName": {"type": "string"}},
        },
        "pollingInterval": {"type": "integer", "minimum": 1},
        "cooldownPeriod": {"type": "integer", "minimum": 0},
        "initialCooldownPeriod": {"type": "integer", "minimum": 0},
        "idleReplicaCount": {"type": "integer", "minimum": 0},
        "minReplicaCount": {"type": "integer", "minimum": 0},
        "maxReplicaCount": {"type": "integer", "minimum": 1},
        "advanced": {"type": "object"},
        "fallback": {"type": "object"},
        "triggers": {
            "type": "array", "minItems": 1,
            "items": {
                "type": "object", "required": ["type", "metadata"], "additionalProperties": False,
                "properties": {
                    "type": {"type": "string"},
                    "name": {"type": "string"},
                    "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
                    "useCachedMetrics": {"type": "boolean"},
                    # KEDA reads every trigger parameter as a string.
                    "metadata": STRING_MAP,
                    "authenticationRef": {
                        "type": "object", "required": ["name"], "additionalProperties": False,
                        "properties": {"name": {"type": "string"}, "kind": {"enum": ["TriggerAuthentication",
                                                                                      "ClusterTriggerAuthentication"]}},
                    },
                },
            },
        },
    },
    "additionalProperties": False,
})

TRIGGER_AUTHENTICATION = _resource({
    "type": "object",
    "properties": {
        "secretTargetRef": {
            "type": "array", "minItems": 1,
            "items": {"type": "object", "required": ["parameter", "name", "key"], "additionalProperties": False,
                      "properties": {"parameter": {"type": "string"}, "name": {"type": "string"},
                                     "key": {"type": "string"}}},
        },
        "env": {"type": "array"},
    },
    "additionalProperties": False,
    "minProperties": 1,
})

ENDPOINT = {
    "type": "object", "required": ["port"], "additionalProperties": False,
    "properties": {"port": {"type": "string"}, "path": {"type": "string", "pattern": "^/"}, "interval": DURATION,
                   "scrapeTimeout": DURATION, "scheme": {"enum": ["http", "https"]}, "honorLabels": {"type": "boolean"},
                   "relabelings": {"type": "array"}, "metricRelabelings": {"type": "array"}},
}
POD_MONITOR = _resource({
    "type": "object", "required": ["selector", "podMetricsEndpoints"], "additionalProperties": False,
    "properties": {"selector": LABEL_SELECTOR, "namespaceSelector": {"type": "object"}, "jobLabel": {"type": "string"},
                   "podTargetLabels": {"type": "array", "items": {"type": "string"}},
                   "podMetricsEndpoints": {"type": "array", "minItems": 1, "items": ENDPOINT}},
})
SERVICE_MONITOR = _resource({
    "type": "object", "required": ["selector", "endpoints"], "additionalProperties": False,
    "properties": {"selector": LABEL_SELECTOR, "namespaceSelector": {"type": "object"}, "jobLabel": {"type": "string"},
                   "targetLabels": {"type": "array", "items": {"type": "string"}},
                   "endpoints": {"type": "array", "minItems": 1, "items": ENDPOINT}},
})
PROMETHEUS_RULE = _resource({
    "type": "object", "required": ["groups"], "additionalProperties": False,
    "properties": {"groups": {
        "type": "array", "minItems": 1,
        "items": {
            "type": "object", "required": ["name", "rules"], "additionalProperties": False,
            "properties": {
                "name": {"type": "string"}, "interval": DURATION,
                "rules": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "required": ["expr"], "additionalProperties": False,
                    "oneOf": [{"required": ["alert"]}, {"required": ["record"]}],
                    "properties": {"alert": {"type": "string"}, "record": {"type": "string"},
                                   "expr": {"type": "string"}, "for": DURATION,
                                   "keep_firing_for": DURATION, "labels": STRING_MAP, "annotations": STRING_MAP},
                }},
            },
        },
    }},
})
RABBITMQ_CLUSTER = _resource({
    "type": "object", "additionalProperties": False,
    "properties": {
        "replicas": {"type": "integer", "minimum": 1},
        "image": {"type": "string"},
        "imagePullSecrets": {"type": "array"},
        "service": {"type": "object"},
        "persistence": {"type": "object", "additionalProperties": False,
                        "properties": {"storage": QUANTITY, "storageClassName": {"type": "string"}}},
        "resources": RESOURCES,
        "affinity": {"type": "object"},
        "tolerations": {"type": "array"},
        "rabbitmq": {"type": "object", "additionalProperties": False,
                     "properties": {"additionalConfig": {"type": "string"}, "advancedConfig": {"type": "string"},
                                    "envConfig": {"type": "string"},
                                    "additionalPlugins": {"type": "array", "items": {"type": "string"}}}},
        "tls": {"type": "object"},
        "override": {"type": "object"},
        "terminationGracePeriodSeconds": {"type": "integer", "minimum": 0},
        "delayStartSeconds": {"type": "integer", "minimum": 0},
        "skipPostDeploySteps": {"type": "boolean"},
        "secretBackend": {"type": "object"},
    },
})

CLUSTER_REFERENCE = {"type": "object", "required": ["name"], "additionalProperties": False,
                     "properties": {"name": {"type": "string"}, "namespace": {"type": "string"}}}
# Messaging Topology Operator (rabbitmq.com/v1beta1 User, Permission).
RABBITMQ_USER = _resource({
    "type": "object", "required": ["rabbitmqClusterReference"], "additionalProperties": False,
    "properties": {"tags": {"type": "array", "items": {"enum": ["management", "policymaker", "monitoring",
                                                               "administrator"]}},
                   "rabbitmqClusterReference": CLUSTER_REFERENCE,
                   "importCredentialsSecret": {"type": "object"}},
})
RABBITMQ_PERMISSION = _resource({
    "type": "object", "required": ["vhost", "permissions", "rabbitmqClusterReference"], "additionalProperties": False,
    "oneOf": [{"required": ["user"]}, {"required": ["userReference"]}],
    "properties": {
        "vhost": {"type": "string"}, "user": {"type": "string"},
        "userReference": {"type": "object", "required": ["name"], "additionalProperties": False,
                          "properties": {"name": {"type": "string"}}},
        "permissions": {"type": "object", "additionalProperties": False,
                        "properties": {k: {"type": "string"} for k in ("configure", "write", "read")}},
        "rabbitmqClusterReference": CLUSTER_REFERENCE,
    },
})
# cert-manager (cert-manager.io/v1 Issuer, Certificate): the fields used here.
ISSUER_REF = {"type": "object", "required": ["name"], "additionalProperties": False,
              "properties": {"name": {"type": "string"}, "kind": {"enum": ["Issuer", "ClusterIssuer"]},
                             "group": {"type": "string"}}}
ISSUER = _resource({
    "type": "object", "additionalProperties": False, "minProperties": 1, "maxProperties": 1,
    "properties": {"selfSigned": {"type": "object"},
                   "ca": {"type": "object", "required": ["secretName"], "additionalProperties": False,
                          "properties": {"secretName": {"type": "string"}}},
                   "acme": {"type": "object"}},
})
CERTIFICATE = _resource({
    "type": "object", "required": ["secretName", "issuerRef"], "additionalProperties": False,
    "anyOf": [{"required": ["dnsNames"]}, {"required": ["commonName"]}],
    "properties": {
        "secretName": {"type": "string"}, "issuerRef": ISSUER_REF, "isCA": {"type": "boolean"},
        "commonName": {"type": "string"}, "dnsNames": {"type": "array", "minItems": 1, "items": {"type": "string"}},
        "duration": DURATION, "renewBefore": DURATION,
        "privateKey": {"type": "object", "additionalProperties": False,
                       "properties": {"algorithm": {"enum": ["RSA", "ECDSA", "Ed25519"]}, "size": {"type": "integer"},
                                      "rotationPolicy": {"enum": ["Never", "Always"]},
                                      "encoding": {"enum": ["PKCS1", "PKCS8"]}}},
        "usages": {"type": "array", "items": {"type": "string"}},
    },
})

SCHEMAS: dict[tuple[str, str], dict[str, Any]] = {
    ("rabbitmq.com/v1beta1", "User"): RABBITMQ_USER,
    ("rabbitmq.com/v1beta1", "Permission"): RABBITMQ_PERMISSION,
    ("cert-manager.io/v1", "Issuer"): ISSUER,
    ("cert-manager.io/v1", "Certificate"): CERTIFICATE,
    ("keda.sh/v1alpha1", "ScaledObject"): SCALED_OBJECT,
    ("keda.sh/v1alpha1", "TriggerAuthentication"): TRIGGER_AUTHENTICATION,
    ("monitoring.coreos.com/v1", "PodMonitor"): POD_MONITOR,
    ("monitoring.coreos.com/v1", "ServiceMonitor"): SERVICE_MONITOR,
    ("monitoring.coreos.com/v1", "PrometheusRule"): PROMETHEUS_RULE,
    ("rabbitmq.com/v1beta1", "RabbitmqCluster"): RABBITMQ_CLUSTER,
}

VENDORED = Path(__file__).resolve().parents[1] / "data" / "crds"
_DROPPED = {"nullable", "format"}


def strict(node: Any) -> Any:
    """A Kubernetes structural schema as a JSON Schema that refuses unknown fields (which the API server
    prunes) and reads ``x-kubernetes-int-or-string`` and ``nullable``."""
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "properties":
            out[key] = {name: strict(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not") and isinstance(value, dict):
            out[key] = strict(value)
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [strict(sub) for sub in value]
        elif not key.startswith("x-kubernetes-") and key not in _DROPPED:
            out[key] = value
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["type"] = ["integer", "string"]
    if node.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    if ("properties" in node and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


def vendored() -> dict[tuple[str, str], dict[str, Any]]:
    """The schemas of tests/data/crds/*.json by (apiVersion, kind), strict, with the metadata checked as above."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(VENDORED.glob("*.json")):
        for name, schema in json.loads(path.read_text())["schemas"].items():
            api_version, kind = name.split(" ")
            converted = strict(schema)
            converted["properties"]["metadata"] = METADATA
            converted.setdefault("required", [])
            converted["required"] = sorted({*converted["required"], "apiVersion", "kind", "metadata", "spec"})
            found[(api_version, kind)] = converted
    return found


SCHEMAS.update(vendored())


def validate_custom(resource: dict[str, Any]) -> None:
    """Raise ``jsonschema.ValidationError`` when a custom resource breaks its structural schema,
    ``KeyError`` when its kind has none here."""
    schema = SCHEMAS[(resource["apiVersion"], resource["kind"])]
    jsonschema.Draft202012Validator(schema).validate(resource)
