"""The layers of docs/decisions/008: nothing under libs/ imports a service or the command line."""

from __future__ import annotations

import ast
from pathlib import Path

from mailmoat_platform import stages

REPO = Path(__file__).resolve().parents[2]
LIBRARIES = ("mailmoat_mail", "mailmoat_policy", "mailmoat_platform", "mailmoat_records")


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, statically (``import x``, ``from x import y``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_imported_modules_sees_nested_and_from_imports(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("import os\nfrom a.b import c\ndef f():\n    import mailmoat_x.y\n")
    assert imported_modules(source) == {"os", "a.b", "mailmoat_x.y"}


def test_no_library_imports_a_service_or_the_command_line() -> None:
    above = {spec.package for spec in stages.stages()} | {"mailmoat_cli"}
    offending = []
    for path in sorted((REPO / "libs").rglob("*.py")):
        for module in imported_modules(path):
            if module.split(".")[0] in above:
                offending.append(f"{path.relative_to(REPO)} imports {module}")
    assert offending == []


def test_the_old_common_package_is_gone() -> None:
    offending = [
        str(path.relative_to(REPO))
        for folder in ("libs", "services", "cli", "tests", "bench", "fuzz")
        for path in (REPO / folder).rglob("*.py")
        if any(m.split(".")[0] == "mailmoat_common" for m in imported_modules(path))
    ]
    assert offending == []


def test_each_library_folder_is_its_import_name() -> None:
    for name in LIBRARIES:
        folder = REPO / "libs" / name.removeprefix("mailmoat_")
        assert (folder / "__init__.py").is_file(), folder
    assert (REPO / "cli" / "__init__.py").is_file()
