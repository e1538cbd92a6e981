"""The docs describe the tree as it is: every module appears in README.md's layout table."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def layout_table() -> str:
    text = (ROOT / "README.md").read_text()
    return text[text.index("## Layout"):text.index("## Attention variants")]


def test_every_module_and_top_level_folder_is_in_the_readme_layout():
    table = layout_table()
    named = set(re.findall(r"`([\w./]+)`", table))
    listed = {Path(name).name for name in named} | named
    modules = [p for p in (ROOT / "lit_gpt").glob("*.py") if p.name != "__init__.py"]
    packages = [p for p in (ROOT / "lit_gpt").iterdir() if (p / "__init__.py").is_file()]
    missing = [p.name for p in modules if p.name not in listed]
    missing += [f"lit_gpt/{p.name}/" for p in packages if f"lit_gpt/{p.name}/" not in named]
    missing += [f"{d}/" for d in ("pretrain", "preprocess", "configs", "scripts", "bench", "docs") if f"{d}/" not in named]
    assert not missing, f"README.md layout table misses {missing}"


def test_architecture_doc_is_short_and_names_real_paths():
    doc = (ROOT / "docs" / "architecture.md").read_text()
    assert len(doc.splitlines()) < 120
    for path in re.findall(r"`(lit_gpt/[\w/]+\.py)`", doc):
        assert (ROOT / path).is_file(), path
