"""Helpers shared by the data tests: tiny corpora, a tiny tokenizer, a LITPKDS writer, and `refused`."""

import json
import random
import struct
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import numpy as np
import pytest

from lit_gpt.core.errors import UserError
from lit_gpt.data.prepare import prepare

WORDS = "the cat sat on a mat while dogs ran past quickly and birds sang loud songs in trees at dawn".split()


def sentences(seed: int, count: int, words: int = 40) -> list[str]:
    """Deterministic pseudo-text documents."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(words)) + f" {index}." for index in range(count)]


def write_jsonl(path: Path, texts: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"text": text}) + "\n" for text in texts), encoding="utf-8")
    return path


def corpus_folder(root: Path) -> Path:
    """A flat folder with three domains, two files for `alpha`."""
    write_jsonl(root / "alpha-0.jsonl", sentences(0, 60))
    write_jsonl(root / "alpha-1.jsonl", sentences(1, 60))
    write_jsonl(root / "beta-0.jsonl", sentences(2, 80, words=20))
    write_jsonl(root / "gamma-0.jsonl", sentences(3, 40, words=80))
    return root


def prepare_tiny(root: Path, **overrides) -> Path:
    """Run the real pipeline on `corpus_folder` with a 300-entry BPE; returns the output folder."""
    options = dict(
        source="jsonl",
        input_dir=corpus_folder(root / "docs"),
        output_dir=root / "out",
        vocab_size=300,
        valid_fraction=0.2,
        probe_count=5,
        probe_path=root / "probe.jsonl",
    )
    options.update(overrides)
    return prepare(**options)


def write_packed(path: Path, tokens: np.ndarray, code: int = 8) -> Path:
    """A LITPKDS shard as upstream/TinyLlama write it (see lit_gpt/data/packed.py for the format)."""
    with open(path, "wb") as f:
        f.write(struct.pack("<7sQBQ", b"LITPKDS", 1, code, len(tokens)))
        f.write(tokens.tobytes())
    return path


@contextmanager
def refused(culprit, match: Optional[str] = None, error: type = UserError):
    """Expect `error` whose message is one line, names `culprit` (a path or a file name) and matches `match`."""
    with pytest.raises(error, match=match) as info:
        yield info
    message = str(info.value)
    assert "\n" not in message, message
    assert str(culprit) in message, message
