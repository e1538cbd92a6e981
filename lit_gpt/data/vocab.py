"""Does the model's vocabulary cover the token ids of the data it is given?

Why: a token id at or beyond the embedding table is an `IndexError` deep inside the first forward pass,
and an id beyond `vocab_size` that still fits the padded table is worse: it trains silently on rows
that generation never samples. Shards record their tokenizer's size in `meta.json`; probe windows are
checked as they are built. Both are refused before any step, naming the file and the fix.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Union

import torch

from lit_gpt.data.errors import DataError

META = "meta.json"


def recorded_vocab_size(data_dir: Union[str, Path]) -> Optional[int]:
    """The tokenizer size `meta.json` records for a shard folder; None when the folder has no meta.json
    (upstream LITPKDS data)."""
    meta = Path(data_dir) / META
    if not meta.is_file():
        return None
    try:
        size = json.loads(meta.read_text(encoding="utf-8"))["tokenizer"]["vocab_size"]
    except (ValueError, KeyError, TypeError):
        raise DataError(f"{meta} is not the meta.json preprocessing writes (no tokenizer.vocab_size); rebuild the "
                        f"folder with preprocess/run_preprocess.sh") from None
    if isinstance(size, bool) or not isinstance(size, int):
        raise DataError(f"{meta}: tokenizer.vocab_size is {size!r}, not an integer; rebuild the folder")
    return size


def vocab_mismatch(data_dir: Union[str, Path], vocab_size: int) -> Optional[str]:
    """Why shards in `data_dir` cannot feed a model with `vocab_size` entries, or None."""
    built = recorded_vocab_size(data_dir)
    if built is not None and built > vocab_size:
        return f"{data_dir} was built with a {built}-entry tokenizer, more than the model's vocab_size={vocab_size}"
    return None


def check_token_ids(tokens: torch.Tensor, vocab_size: int, source: str) -> torch.Tensor:
    """`tokens` unchanged when every id is below `vocab_size`; a `DataError` naming `source` otherwise."""
    if tokens.numel() and int(tokens.max()) >= vocab_size:
        raise DataError(f"{source} yields token id {int(tokens.max())}, beyond the model's vocab_size={vocab_size}; "
                        f"use the tokenizer the model was trained with (--tokenizer)")
    return tokens


__all__ = ["check_token_ids", "recorded_vocab_size", "vocab_mismatch"]
