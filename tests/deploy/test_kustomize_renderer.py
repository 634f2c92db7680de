"""The small kustomize renderer the manifest tests rely on: what it implements, and what it refuses."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.deploy.kustomize import KustomizeError, apply_operation, render, split_image

DEPLOYMENT = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "web"},
    "spec": {"template": {"spec": {"containers": [{"name": "web", "image": "example/web:1.0"}]}}},
}


def write(directory: Path, files: dict[str, object]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            path.write_text(content)
        else:
            path.write_text(yaml.safe_dump_all(content) if isinstance(content, list) else yaml.safe_dump(content))
    return directory


def test_base_overlay_component_generator_patch_image_namespace(tmp_path: Path) -> None:
    write(tmp_path / "base", {
        "kustomization.yaml": {"resources": ["web.yaml"], "configMapGenerator": [
            {"name": "conf", "files": ["settings.yaml", "renamed.txt=data/original.txt"], "literals": ["a=b=c"],
             "options": {"disableNameSuffixHash": True, "labels": {"x": "1"}}}]},
        "web.yaml": [DEPLOYMENT],
        "settings.yaml": "answer: 42\n",
        "data/original.txt": "text",
    })
    write(tmp_path / "component", {
        "kustomization.yaml": {"apiVersion": "kustomize.config.k8s.io/v1alpha1", "kind": "Component",
                               "resources": ["extra.yaml"]},
        "extra.yaml": [{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "extra"}}],
    })
    overlay = write(tmp_path / "overlay", {"kustomization.yaml": {
        "namespace": "prod",
        "resources": ["../base"],
        "components": ["../component"],
        "images": [{"name": "example/web", "newName": "registry.test/web", "newTag": "2.0"}],
        "patches": [{"target": {"group": "apps", "kind": "Deployment", "name": "web"}, "patch": yaml.safe_dump([
            {"op": "add", "path": "/spec/replicas", "value": 3},
            {"op": "add", "path": "/spec/template/spec/containers/-", "value": {"name": "side", "image": "side:1"}},
            {"op": "replace", "path": "/metadata/name", "value": "web2"},
        ])}],
    }})
    out = {(r["kind"], r["metadata"]["name"]): r for r in render(overlay)}
    assert set(out) == {("Deployment", "web2"), ("ConfigMap", "conf"), ("Service", "extra")}
    deployment = out["Deployment", "web2"]
    assert deployment["spec"]["replicas"] == 3
    assert [c["image"] for c in deployment["spec"]["template"]["spec"]["containers"]] == ["registry.test/web:2.0",
                                                                                         "side:1"]
    assert out["ConfigMap", "conf"]["data"] == {"settings.yaml": "answer: 42\n", "renamed.txt": "text", "a": "b=c"}
    assert out["ConfigMap", "conf"]["metadata"]["labels"] == {"x": "1"}
    assert {r["metadata"]["namespace"] for r in out.values()} == {"prod"}


@pytest.mark.parametrize(
    ("kustomization", "files", "message"),
    [
        ({"resources": ["web.yaml"], "commonLabels": {"a": "b"}}, {}, "does not implement"),
        ({"resources": ["web.yaml"], "configMapGenerator": [{"name": "c", "literals": ["a=b"]}]}, {}, "hashes"),
        ({"resources": ["web.yaml"], "patches": [{"target": {"kind": "Deployment", "name": "web"},
                                                  "patch": "spec:\n  replicas: 2\n"}]}, {}, "strategic merge"),
        ({"resources": ["web.yaml"], "patches": [{"target": {"kind": "Deployment", "name": "nope"},
                                                  "patch": "- {op: remove, path: /spec}\n"}]}, {}, "matches no"),
        ({"resources": ["web.yaml"], "configMapGenerator": [{"name": "c", "files": ["../outside.txt"],
                                                             "options": {"disableNameSuffixHash": True}}]},
         {}, "outside"),
        ({"resources": ["missing.yaml"]}, {}, "does not exist"),
        ({"resources": ["web.yaml", "web.yaml"]}, {}, "duplicate"),
    ],
)
def test_refuses_what_it_does_not_render_faithfully(
    tmp_path: Path, kustomization: dict[str, object], files: dict[str, object], message: str
) -> None:
    (tmp_path / "outside.txt").write_text("x")
    directory = write(tmp_path / "k", {"kustomization.yaml": kustomization, "web.yaml": [DEPLOYMENT], **files})
    with pytest.raises(KustomizeError, match=message):
        render(directory)


def test_json_patch_operations() -> None:
    doc = {"a": {"b": [1, 2, 3]}, "x/y": {"~t": 1}}
    apply_operation(doc, {"op": "add", "path": "/a/b/1", "value": 9})
    apply_operation(doc, {"op": "remove", "path": "/a/b/0"})
    apply_operation(doc, {"op": "replace", "path": "/x~1y/~0t", "value": 2})
    apply_operation(doc, {"op": "test", "path": "/a/b", "value": [9, 2, 3]})
    assert doc == {"a": {"b": [9, 2, 3]}, "x/y": {"~t": 2}}
    with pytest.raises(KustomizeError):
        apply_operation(doc, {"op": "replace", "path": "/a/missing", "value": 1})
    with pytest.raises(KustomizeError):
        apply_operation(doc, {"op": "test", "path": "/a/b/0", "value": 1})
    with pytest.raises(KustomizeError):
        apply_operation(doc, {"op": "remove", "path": "/a/b/3"})


@pytest.mark.parametrize(
    ("image", "parts"),
    [
        ("mailmoat:0.1.0", ("mailmoat", "0.1.0", None)),
        ("registry:5000/team/app", ("registry:5000/team/app", None, None)),
        ("registry:5000/app:1@sha256:ab", ("registry:5000/app", "1", "sha256:ab")),
    ],
)
def test_split_image(image: str, parts: tuple[str, str | None, str | None]) -> None:
    assert split_image(image) == parts
