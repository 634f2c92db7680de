"""Write the schemas of released CRD manifests to tests/data/crds/<name>.json, for ``crds.validate_custom``:
each version served for storage, its ``openAPIV3Schema`` without ``status`` and without descriptions (the
structure the API server checks, in a few kilobytes instead of hundreds).

    python -m tests.deploy.vendor_crds cnpg "<release and path>" clusters.yaml scheduledbackups.yaml ...
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

DATA = Path(__file__).resolve().parents[1] / "data" / "crds"


def _strip(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip(v) for k, v in node.items() if k != "description"}
    if isinstance(node, list):
        return [_strip(v) for v in node]
    return node


def schemas(manifests: list[Path]) -> dict[str, Any]:
    """``"<group>/<version> <Kind>"`` -> the stripped schema of every CRD in ``manifests``."""
    found: dict[str, Any] = {}
    for path in manifests:
        for crd in yaml.safe_load_all(path.read_text()):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            (version,) = [v for v in crd["spec"]["versions"] if v.get("storage")]
            schema = version["schema"]["openAPIV3Schema"]
            schema.get("properties", {}).pop("status", None)
            found[f"{crd['spec']['group']}/{version['name']} {crd['spec']['names']['kind']}"] = _strip(schema)
    return found


def main(argv: list[str]) -> None:
    name, source, *paths = argv
    data = {"source": source, "schemas": schemas([Path(p) for p in paths])}
    (DATA / f"{name}.json").write_text(json.dumps(data, sort_keys=True, separators=(",", ":")) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
