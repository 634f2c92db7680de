"""A small renderer for the kustomize subset deploy/k8s uses; anything outside it is refused.

Supported: ``resources`` (files and kustomization directories), ``components`` (kind Component),
``configMapGenerator`` (files, literals, options; name hashes must be disabled), ``patches`` as
JSON 6902 operations with a ``target``, ``images`` and ``namespace``. A key kustomize knows but this
renderer does not raises ``KustomizeError``, so the manifests cannot silently outgrow it.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

Resource = dict[str, Any]

KUSTOMIZATION_KEYS = {
    "apiVersion", "kind", "namespace", "resources", "components", "configMapGenerator", "patches", "images",
}
GENERATOR_KEYS = {"name", "files", "literals", "options", "behavior"}
OPTION_KEYS = {"disableNameSuffixHash", "labels", "annotations"}
PATCH_KEYS = {"target", "patch", "path"}
TARGET_KEYS = {"group", "version", "kind", "name"}
IMAGE_KEYS = {"name", "newName", "newTag", "digest"}
CLUSTER_SCOPED = {
    "Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "PersistentVolume",
    "StorageClass", "PriorityClass", "ClusterTriggerAuthentication", "IngressClass",
}
POD_SPEC_PATHS = (("spec", "template", "spec"), ("spec", "jobTemplate", "spec", "template", "spec"), ("spec",))


class KustomizeError(ValueError):
    """A kustomization this renderer cannot render faithfully, or one kustomize would refuse."""


def render(directory: str | Path, extra_components: list[str | Path] | None = None) -> list[Resource]:
    """The resources ``kubectl kustomize DIRECTORY`` would print, as dicts, in order."""
    directory = Path(directory).resolve()
    kustomization = _load(directory, "Kustomization")
    if extra_components:
        kustomization = {**kustomization, "components": [*kustomization.get("components", []),
                                                         *(str(Path(c).resolve()) for c in extra_components)]}
    resources = _build(directory, kustomization, [])
    _check_unique(resources)
    return resources


def _load(directory: Path, kind: str) -> dict[str, Any]:
    path = directory / "kustomization.yaml"
    if not path.is_file():
        raise KustomizeError(f"{directory}: no kustomization.yaml")
    doc = yaml.safe_load(path.read_text()) or {}
    unknown = set(doc) - KUSTOMIZATION_KEYS
    if unknown:
        raise KustomizeError(f"{path}: keys this renderer does not implement: {sorted(unknown)}")
    if doc.get("kind", "Kustomization") != kind:
        raise KustomizeError(f"{path}: expected kind {kind}, found {doc.get('kind')}")
    return doc


def _build(directory: Path, kustomization: dict[str, Any], inherited: list[Resource]) -> list[Resource]:
    resources = list(inherited)
    for entry in kustomization.get("resources", []):
        target = _inside(directory, entry, allow_parent=True)
        if target.is_dir():
            resources += render(target)
        else:
            resources += load_resources(target)
    for entry in kustomization.get("components", []):
        component = Path(entry) if Path(entry).is_absolute() else (directory / entry).resolve()
        resources = _build(component, _load(component, "Component"), resources)
    for generator in kustomization.get("configMapGenerator", []):
        resources = _generate_configmap(directory, generator, resources)
    for patch in kustomization.get("patches", []):
        _apply_patch(directory, patch, resources)
    for image in kustomization.get("images", []):
        _apply_image(image, resources)
    if "namespace" in kustomization:
        for resource in resources:
            if resource["kind"] not in CLUSTER_SCOPED:
                resource["metadata"]["namespace"] = kustomization["namespace"]
    return resources


def _inside(directory: Path, entry: str, *, allow_parent: bool = False) -> Path:
    """A path of the kustomization; files must not leave its directory (kustomize's load restrictor)."""
    target = (directory / entry).resolve()
    if not target.exists():
        raise KustomizeError(f"{directory}: {entry} does not exist")
    if target.is_file() and directory not in target.parents:
        raise KustomizeError(f"{directory}: {entry} is outside the kustomization directory")
    if target.is_dir() and not allow_parent:
        raise KustomizeError(f"{directory}: {entry} is a directory")
    return target


def load_resources(path: Path) -> list[Resource]:
    """The Kubernetes objects of a YAML file (empty documents skipped)."""
    out = []
    for doc in yaml.safe_load_all(path.read_text()):
        if doc is None:
            continue
        for key in ("apiVersion", "kind"):
            if not isinstance(doc.get(key), str):
                raise KustomizeError(f"{path}: a document without {key}")
        if not isinstance(doc.get("metadata"), dict) or not doc["metadata"].get("name"):
            raise KustomizeError(f"{path}: a {doc['kind']} without metadata.name")
        out.append(doc)
    return out


def _generate_configmap(directory: Path, generator: dict[str, Any], resources: list[Resource]) -> list[Resource]:
    unknown = set(generator) - GENERATOR_KEYS
    options = generator.get("options", {})
    unknown |= set(options) - OPTION_KEYS
    if unknown:
        raise KustomizeError(f"{directory}: configMapGenerator keys not implemented: {sorted(unknown)}")
    if not options.get("disableNameSuffixHash"):
        raise KustomizeError(f"{directory}: {generator['name']}: name suffix hashes are not implemented")
    data: dict[str, str] = {}
    for entry in generator.get("files", []):
        key, _, source = entry.rpartition("=")
        path = _inside(directory, source)
        data[key or path.name] = path.read_text()
    for entry in generator.get("literals", []):
        key, sep, value = entry.partition("=")
        if not sep:
            raise KustomizeError(f"{directory}: literal {entry!r} without '='")
        data[key] = value
    metadata: dict[str, Any] = {"name": generator["name"]}
    for field in ("labels", "annotations"):
        if options.get(field):
            metadata[field] = dict(options[field])
    configmap = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data}
    behavior = generator.get("behavior", "create")
    existing = [r for r in resources if r["kind"] == "ConfigMap" and r["metadata"]["name"] == generator["name"]]
    if behavior == "create":
        if existing:
            raise KustomizeError(f"{directory}: ConfigMap {generator['name']} already exists")
        return [*resources, configmap]
    if behavior not in ("replace", "merge") or not existing:
        raise KustomizeError(f"{directory}: behavior {behavior} for {generator['name']} needs an existing ConfigMap")
    target = existing[0]
    if behavior == "replace":
        target["data"] = data
    else:
        target.setdefault("data", {}).update(data)
    for field in ("labels", "annotations"):
        target["metadata"].setdefault(field, {}).update(metadata.get(field, {}))
    return resources


def _matches(target: dict[str, Any], resource: Resource) -> bool:
    group, _, version = resource["apiVersion"].rpartition("/")
    return (
        target.get("kind") == resource["kind"]
        and target.get("name") == resource["metadata"]["name"]
        and target.get("group", group) == group
        and target.get("version", version) == version
    )


def _apply_patch(directory: Path, patch: dict[str, Any], resources: list[Resource]) -> None:
    unknown = set(patch) - PATCH_KEYS
    target = patch.get("target")
    if unknown or not isinstance(target, dict) or set(target) - TARGET_KEYS:
        raise KustomizeError(f"{directory}: only JSON 6902 patches with a target (kind, name, group, version)")
    if not {"kind", "name"} <= set(target):
        raise KustomizeError(f"{directory}: a patch target needs kind and name")
    text = patch["patch"] if "patch" in patch else _inside(directory, patch["path"]).read_text()
    operations = yaml.safe_load(text)
    if not isinstance(operations, list):
        raise KustomizeError(f"{directory}: strategic merge patches are not implemented (target {target})")
    matched = [r for r in resources if _matches(target, r)]
    if not matched:
        raise KustomizeError(f"{directory}: patch target {target} matches no resource")
    for resource in matched:
        for operation in operations:
            apply_operation(resource, operation)


def _pointer(path: str) -> list[str]:
    if not path.startswith("/"):
        raise KustomizeError(f"JSON pointer {path!r} must start with '/'")
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def _index(container: list[Any], token: str, *, insert: bool) -> int:
    if token == "-" and insert:
        return len(container)
    if not token.isdigit():
        raise KustomizeError(f"list index {token!r} is not a number")
    index = int(token)
    if index > len(container) or (index == len(container) and not insert):
        raise KustomizeError(f"list index {index} out of range")
    return index


def apply_operation(document: Any, operation: dict[str, Any]) -> None:
    """One RFC 6902 operation (add, remove, replace, test) on ``document``, in place."""
    op = operation.get("op")
    tokens = _pointer(operation["path"])
    parent = document
    for token in tokens[:-1]:
        if isinstance(parent, list):
            parent = parent[_index(parent, token, insert=False)]
        elif isinstance(parent, dict) and token in parent:
            parent = parent[token]
        else:
            raise KustomizeError(f"{operation['path']}: {token!r} does not exist")
    last = tokens[-1]
    if op == "add":
        value = copy.deepcopy(operation["value"])
        if isinstance(parent, list):
            parent.insert(_index(parent, last, insert=True), value)
        else:
            parent[last] = value
        return
    if isinstance(parent, list):
        key: Any = _index(parent, last, insert=False)
    elif isinstance(parent, dict) and last in parent:
        key = last
    else:
        raise KustomizeError(f"{operation['path']} does not exist")
    if op == "replace":
        parent[key] = copy.deepcopy(operation["value"])
    elif op == "remove":
        del parent[key]
    elif op == "test":
        if parent[key] != operation["value"]:
            raise KustomizeError(f"test failed at {operation['path']}")
    else:
        raise KustomizeError(f"JSON patch operation {op!r} is not implemented")


def split_image(image: str) -> tuple[str, str | None, str | None]:
    """(name, tag, digest) of an image reference."""
    digest = None
    if "@" in image:
        image, digest = image.split("@", 1)
    name, tag = image, None
    if ":" in image.rsplit("/", 1)[-1]:
        name, tag = image.rsplit(":", 1)
    return name, tag, digest


def containers(resource: Resource) -> list[dict[str, Any]]:
    """Every container and init container of a workload (Pod, Deployment, StatefulSet, Job, ...)."""
    for path in POD_SPEC_PATHS:
        spec: Any = resource
        for key in path:
            spec = spec.get(key) if isinstance(spec, dict) else None
        if isinstance(spec, dict) and "containers" in spec:
            return [*spec.get("initContainers", []), *spec["containers"]]
    return []


def _apply_image(image: dict[str, Any], resources: list[Resource]) -> None:
    if set(image) - IMAGE_KEYS:
        raise KustomizeError(f"images: keys not implemented: {sorted(set(image) - IMAGE_KEYS)}")
    for resource in resources:
        for container in containers(resource):
            name, tag, digest = split_image(container["image"])
            if name != image["name"]:
                continue
            name = image.get("newName", name)
            if "digest" in image:
                container["image"] = f"{name}@{image['digest']}"
                continue
            if image.get("newTag") is not None:
                tag = str(image["newTag"])
            container["image"] = name + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")


def _check_unique(resources: list[Resource]) -> None:
    seen: set[tuple[str, str, str, str]] = set()
    for resource in resources:
        group = resource["apiVersion"].rpartition("/")[0]
        key = (group, resource["kind"], resource["metadata"].get("namespace", ""), resource["metadata"]["name"])
        if key in seen:
            raise KustomizeError(f"duplicate resource {key}")
        seen.add(key)
