"""The docs describe the tree as it is: every layer in README.md's layout table, every module in its row of
docs/architecture.md's layer table."""

import re
from pathlib import Path

from layer_doc import layer_rows

ROOT = Path(__file__).resolve().parents[1]


def layout_table() -> str:
    text = (ROOT / "README.md").read_text()
    return text[text.index("## Layout") : text.index("## Attention variants")]


def test_every_layer_and_top_level_folder_is_in_the_readme_layout():
    table = layout_table()
    named = set(re.findall(r"`([\w./]+)`", table))
    packages = [p for p in (ROOT / "lit_gpt").iterdir() if (p / "__init__.py").is_file()]
    missing = [f"lit_gpt/{p.name}/" for p in packages if f"lit_gpt/{p.name}/" not in named]
    missing += [
        f"{d}/" for d in ("pretrain", "preprocess", "configs", "scripts", "bench", "docs") if f"{d}/" not in named
    ]
    assert not missing, f"README.md layout table misses {missing}"


def test_every_module_of_a_layer_is_named_in_its_row_of_the_architecture_doc():
    rows = {layer: " | ".join(cells) for layer, cells in layer_rows().items()}
    missing = [
        f"{layer.name}/{module.name}"
        for layer in sorted((ROOT / "lit_gpt").iterdir())
        if layer.name in rows
        for module in sorted(layer.iterdir())
        if module.name != "__init__.py"
        and module.name != "__pycache__"
        and f"`{module.stem}`" not in rows[layer.name]
        and f"`{module.name}/`" not in rows[layer.name]
    ]
    assert not missing, f"docs/architecture.md's layer table misses {missing}"


def test_architecture_doc_is_short_and_names_real_paths():
    doc = (ROOT / "docs" / "architecture.md").read_text()
    assert len(doc.splitlines()) < 120
    for path in re.findall(r"`(lit_gpt/[\w/]+\.py)`", doc):
        assert (ROOT / path).is_file(), path
