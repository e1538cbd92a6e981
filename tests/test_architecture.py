"""The package's layers as docs/architecture.md draws them: one folder per layer, and no import against
the table's order (the lazy imports inside functions count too)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from layer_doc import layer_rows

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "lit_gpt"


def layer_table() -> dict[str, set[str]]:
    """Layer -> the layers it may import, read from the architecture doc's table."""
    allowed = {}
    for layer, cells in layer_rows().items():
        cell = cells[-1]
        allowed[layer] = (
            {"*"}
            if cell == "every layer"
            else (set() if cell == "nothing" else {name.strip() for name in cell.split(",")})
        )
    return allowed


def imported_modules(source: str, module: str) -> set[str]:
    """Every `lit_gpt` module a source file imports, anywhere in it, relative imports resolved."""
    package = module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.add(name)
    return {name for name in found if name == "lit_gpt" or name.startswith("lit_gpt.")}


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def back_edges(sources: dict[str, str], allowed: dict[str, set[str]]) -> list[str]:
    """'importer -> imported' for each import whose layer the importer's layer may not import."""
    wrong = []
    for module, source in sorted(sources.items()):
        mine = layer_of(module)
        for name in sorted(imported_modules(source, module)):
            theirs = layer_of(name)
            if theirs in ("", mine) or "*" in allowed.get(mine, set()) or theirs in allowed.get(mine, set()):
                continue
            wrong.append(f"{module} -> {name} ({mine} may import {sorted(allowed.get(mine, set())) or 'nothing'})")
    return wrong


def package_sources() -> dict[str, str]:
    sources = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        sources[".".join(parts)] = path.read_text()
    return sources


def test_every_folder_of_the_package_is_a_layer_of_the_table():
    allowed = layer_table()
    folders = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    loose = sorted(p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py")
    assert not loose, f"modules outside every layer: {loose}; move each into the layer it belongs to"
    assert folders == set(allowed), f"folders {sorted(folders)} vs docs/architecture.md layers {sorted(allowed)}"
    for layer, imports in allowed.items():
        assert imports <= set(allowed) | {"*"}, f"{layer} imports unknown layers {imports - set(allowed)}"


def test_no_import_goes_against_the_layer_order():
    assert back_edges(package_sources(), layer_table()) == []


@pytest.mark.parametrize(
    "source",
    [
        "from lit_gpt.training.checkpoint import load_model\n",
        "def later():\n    import lit_gpt.reporting.table\n",
        "def later():\n    from ..training import trainer\n",
    ],
)
def test_a_planted_back_edge_is_found(source):
    sources = package_sources()
    sources["lit_gpt.measurement.planted"] = source
    found = back_edges(sources, layer_table())
    assert len(found) == 1 and found[0].startswith("lit_gpt.measurement.planted -> lit_gpt.")


def test_the_table_orders_the_layers_without_a_cycle():
    allowed = {layer: imports - {"*"} for layer, imports in layer_table().items()}
    done: set[str] = set()
    while len(done) < len(allowed):
        ready = {layer for layer, imports in allowed.items() if layer not in done and imports <= done}
        assert ready, f"cycle among {sorted(set(allowed) - done)}"
        done |= ready
