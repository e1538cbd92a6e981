"""An offline corpus built from the Python standard library that ships with the interpreter.

Why: CPU experiments need ~10M tokens of real, structured text without network access, and every Python
installation carries its standard library sources. Three domains, so mixtures have something to weigh:
- `code`: library modules (`<stdlib>/**/*.py` outside test folders),
- `tests`: the test suites (`test`/`tests`/`idle_test` folders, `test_*.py`); absent on distributions that
  package them separately, in which case the domain is simply missing,
- `docs`: prose, namely every docstring of the library modules (one document per module) and the pydoc
  help topics from `pydoc_data.topics`.
Files that are not UTF-8 or (for `docs`) not parseable are skipped. The corpus depends on the Python
version, which `meta.json` records.
"""

import ast
import json
import multiprocessing
import sys
import sysconfig
from pathlib import Path

from lit_gpt.data.errors import DataError

TEST_DIRS = {"test", "tests", "idle_test"}
SKIPPED_DIRS = {"site-packages", "dist-packages", "__pycache__"}


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _is_test(relative: Path) -> bool:
    return bool(TEST_DIRS.intersection(relative.parts[:-1])) or relative.name.startswith("test_")


def stdlib_files(root: Path) -> dict[str, list[Path]]:
    """Library and test source files under `root`, sorted by path so the corpus is reproducible."""
    files: dict[str, list[Path]] = {"code": [], "tests": []}
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root)
        if SKIPPED_DIRS.isdisjoint(relative.parts):
            files["tests" if _is_test(relative) else "code"].append(path)
    return files


def _read_utf8(path: Path) -> str | None:
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        return None


def _docstrings(path: Path) -> str | None:
    source = _read_utf8(path)
    if source is None:
        return None
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return None
    nodes = (
        node
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
    )
    docs = [doc for doc in map(ast.get_docstring, nodes) if doc]
    return "\n\n".join(docs) or None


def _pydoc_topics() -> list[str]:
    import pydoc_data.topics

    return [pydoc_data.topics.topics[name] for name in sorted(pydoc_data.topics.topics)]


def stdlib_documents(root: Path, processes: int = 2) -> dict[str, list[str]]:
    """The corpus: domain -> documents, in a fixed order."""
    files = stdlib_files(root)
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        code = pool.map(_read_utf8, files["code"], chunksize=32)
        tests = pool.map(_read_utf8, files["tests"], chunksize=32)
        docs = pool.map(_docstrings, files["code"], chunksize=32)
    corpus = {"code": code, "tests": tests, "docs": docs + _pydoc_topics()}
    return {domain: [text for text in texts if text] for domain, texts in corpus.items() if any(texts)}


def write_embedded_corpus(folder: Path, files_per_domain: int = 4, processes: int = 2) -> dict[str, int]:
    """Write the corpus as `<domain>-<i>.jsonl` files into `folder`; returns documents per domain.

    Several files per domain let the tokenization workers share a domain.
    """
    root = stdlib_root()
    corpus = stdlib_documents(root, processes)
    if not corpus:
        raise DataError(f"no readable Python sources under {root}; use --source jsonl with your own documents")
    folder.mkdir(parents=True, exist_ok=True)
    for domain, texts in corpus.items():
        per_file = -(-len(texts) // files_per_domain)
        for index in range(0, len(texts), per_file):
            with open(folder / f"{domain}-{index // per_file:03d}.jsonl", "w", encoding="utf-8") as out:
                for text in texts[index : index + per_file]:
                    out.write(json.dumps({"text": text}) + "\n")
    return {domain: len(texts) for domain, texts in corpus.items()}


def python_version() -> str:
    return ".".join(map(str, sys.version_info[:3]))
