"""The package's layering, as drawn in DESIGN.md: each layer imports only the layers before it.

data -> models -> explain -> metrics -> (concepts, train, simulate) -> workflows -> scale -> report -> cli. The
foundation modules (errors, files, registry, progress, ndimage, allocator) import no layer. Every import counts,
including those inside functions.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "medexplain"
FOUNDATION = ("errors", "files", "registry", "progress", "ndimage", "allocator")
LAYERS = {
    **dict.fromkeys(FOUNDATION, 0),
    "data": 1,
    "models": 2,
    "explain": 3,
    "metrics": 4,
    "concepts": 5,
    "train": 5,
    "simulate": 5,
    "workflows": 6,
    "scale": 7,
    "report": 8,
    "cli": 9,
    "__main__": 9,
}
FACADE = "medexplain/__init__.py"  # the package's public names, re-exported from the layers


def layer_of(module: str) -> str:
    """``"medexplain.explain.lrp.rules"`` -> ``"explain"``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def imported_modules(path: Path, package: str) -> list[tuple[int, str]]:
    """``(line, module)`` of every ``medexplain`` import in the file at ``path`` (module ``package``)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.startswith("medexplain")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the importing package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            if module.startswith("medexplain"):
                found.append((node.lineno, module))
    return found


def violations(root: Path) -> list[str]:
    """Every import in ``root`` (a ``medexplain`` source tree) of a layer that comes later than the importer's."""
    problems = []
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root.parent)
        if str(relative) == FACADE:
            continue
        module = ".".join(relative.with_suffix("").parts)
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        own = layer_of(module)
        if own not in LAYERS:
            problems.append(f"{relative}: module of no layer (add it to LAYERS)")
            continue
        for line, imported in imported_modules(path, package):
            other = layer_of(imported)
            if other and other != own and LAYERS.get(other, 99) > LAYERS[own]:
                problems.append(f"{relative}:{line}: {own} imports {imported} (layer {other})")
    return problems


def test_every_import_respects_the_layers() -> None:
    assert violations(PACKAGE) == []


@pytest.mark.parametrize(
    ("importer", "statement"),
    [
        ("explain/cam.py", "from medexplain.workflows.explanations import load_explanations"),
        ("metrics/localisation.py", "    from medexplain.report import build_report\n"),
        ("data/dataset.py", "import medexplain.models.registry"),
        ("errors.py", "from medexplain.data import load_dataset"),
    ],
)
def test_a_wrong_import_is_caught(tmp_path: Path, importer: str, statement: str) -> None:
    """The same check on a copy of the package with one import that goes the wrong way."""
    import shutil

    copy = tmp_path / "medexplain"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    target = copy / importer
    target.write_text(target.read_text(encoding="utf-8") + "\n\ndef _wrong():\n" + "    " + statement.strip() + "\n")
    found = violations(copy)
    assert len(found) == 1 and found[0].startswith(f"medexplain/{importer}:"), found
