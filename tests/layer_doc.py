"""docs/architecture.md's layer table, read once for the tests that hold the tree to it."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROW = re.compile(r"^\| `lit_gpt/(\w+)/` \|(.*)\|$")


def layer_rows() -> dict[str, list[str]]:
    """Layer folder -> the cells of its row after the folder: what it holds, ..., the layers it may import."""
    rows = {}
    for line in (ROOT / "docs" / "architecture.md").read_text().splitlines():
        match = ROW.match(line)
        if match:
            rows[match.group(1)] = [cell.strip() for cell in match.group(2).split("|")]
    return rows
