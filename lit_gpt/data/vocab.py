"""Does the model's vocabulary cover the token ids of the data it is given?

Why: a token id at or beyond the embedding table is an `IndexError` deep inside the first forward pass,
and an id beyond `vocab_size` that still fits the padded table is worse: it trains silently on rows
that generation never samples. Shards record their tokenizer's size in `meta.json`; shards without one
(upstream LITPKDS data, a deleted meta.json) are read once for their largest token id instead, and a
`meta.json` whose size is no tokenizer's (below 2, not an integer) is refused as damaged, never trusted.
Probe windows are checked as they are built. All are refused before any step, naming the file and the fix.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Union

import torch

from lit_gpt.data.errors import DataError
from lit_gpt.data.stream import INDEX, open_stream

META = "meta.json"
# The smallest vocabulary a tokenizer can have: an EOS and one token of text.
MIN_VOCAB = 2


def recorded_vocab_size(data_dir: Union[str, Path]) -> Optional[int]:
    """The vocabulary the shards of a folder need: the tokenizer size `meta.json` records, or without a
    meta.json the largest token id of its shards plus one (None when it holds no shards)."""
    size = meta_vocab_size(data_dir)
    if size is None:
        largest = largest_token_id(data_dir)
        return None if largest is None else largest + 1
    return size


def meta_vocab_size(data_dir: Union[str, Path]) -> Optional[int]:
    """The tokenizer size `meta.json` records for a shard folder; None when the folder has no meta.json. What
    needs the tokenizer's own size (random tokens drawn from it) uses this, never a guess from the ids."""
    meta = Path(data_dir) / META
    if not meta.is_file():
        return None
    try:
        size = json.loads(meta.read_text(encoding="utf-8"))["tokenizer"]["vocab_size"]
    except (ValueError, KeyError, TypeError):
        raise DataError(
            f"{meta} is not the meta.json preprocessing writes (no tokenizer.vocab_size); rebuild the "
            f"folder with preprocess/run_preprocess.sh"
        ) from None
    if isinstance(size, bool) or not isinstance(size, int) or size < MIN_VOCAB:
        raise DataError(
            f"{meta}: tokenizer.vocab_size is {size!r}, not the size of a tokenizer (an integer of at least "
            f"{MIN_VOCAB}); it is damaged: rebuild the folder, or delete {META} to check the shards' ids"
        )
    return size


def largest_token_id(data_dir: Union[str, Path]) -> Optional[int]:
    """The largest token id in the shards of `data_dir` (litdata datasets and LITPKDS files); None without any."""
    data_dir = Path(data_dir)
    names = sorted(
        {path.parent.name for path in data_dir.glob(f"*/{INDEX}")} | {path.stem for path in data_dir.glob("*.bin")}
    )
    largest = max((open_stream(data_dir, name).largest() for name in names), default=-1)
    return largest if largest >= 0 else None


def vocab_mismatch(data_dir: Union[str, Path], vocab_size: int) -> Optional[str]:
    """Why shards in `data_dir` cannot feed a model with `vocab_size` entries, or None."""
    built = meta_vocab_size(data_dir)
    if built is None:
        largest = largest_token_id(data_dir)
        if largest is not None and largest >= vocab_size:
            return (
                f"{data_dir} holds token id {largest} (it has no {META} naming its tokenizer), beyond the model's "
                f"vocab_size={vocab_size}"
            )
        return None
    if built > vocab_size:
        return f"{data_dir} was built with a {built}-entry tokenizer, more than the model's vocab_size={vocab_size}"
    return None


def check_token_ids(tokens: torch.Tensor, vocab_size: int, source: str) -> torch.Tensor:
    """`tokens` unchanged when every id is below `vocab_size`; a `DataError` naming `source` otherwise."""
    if tokens.numel() and int(tokens.max()) >= vocab_size:
        raise DataError(
            f"{source} yields token id {int(tokens.max())}, beyond the model's vocab_size={vocab_size}; "
            f"use the tokenizer the model was trained with (--tokenizer)"
        )
    return tokens


__all__ = ["check_token_ids", "largest_token_id", "meta_vocab_size", "recorded_vocab_size", "vocab_mismatch"]
