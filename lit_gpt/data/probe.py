"""The probe set for the sink metric: held-out texts, and their first 64 tokens as model input.

The metric (see docs/reference.md) averages attention over 100 sequences of 64 tokens taken from held-out
text. A model with a BOS gets it written over the first token of every window, as our training loader
writes a run's BOS over the first token of every training window, so both evaluation commands give such a
model the same windows (`load_probe_windows`). Preprocessing picks the texts from the validation split,
one per document, alternating between domains, and stores text (not ids) so any tokenizer can be probed.
"""

import itertools
import json
from pathlib import Path
from typing import Iterable, Iterator, Optional, Union

import torch

from lit_gpt.core.files import write_atomic
from lit_gpt.data.documents import iter_texts
from lit_gpt.data.errors import DataError
from lit_gpt.data.tokenizer import Tokenizer, load_tokenizer
from lit_gpt.data.transforms import set_fixed_token
from lit_gpt.data.vocab import check_token_ids

PROBE_TOKENS = 64
PROBE_COUNT = 100
# Generous for 64 tokens with any tokenizer, short enough to keep the file small.
SNIPPET_CHARS = 2000


def _snippet(text: str) -> str:
    if len(text) <= SNIPPET_CHARS:
        return text
    cut = text.rfind("\n", 0, SNIPPET_CHARS)
    return text[: cut + 1] if cut > 0 else text[:SNIPPET_CHARS]


def select_probe_texts(
    texts_by_domain: dict[str, Iterable[str]], tokenizer: Tokenizer, count: int = PROBE_COUNT
) -> list[dict]:
    """`count` records {"domain", "text"} whose text has >= 64 tokens, taken round-robin over domains."""

    def eligible(domain: str, texts: Iterable[str]) -> Iterator[dict]:
        for snippet in map(_snippet, texts):
            if len(tokenizer.encode(snippet)) >= PROBE_TOKENS:
                yield {"domain": domain, "text": snippet}

    records: list[dict[str, str]] = []
    for layer in itertools.zip_longest(*itertools.starmap(eligible, texts_by_domain.items())):
        records.extend(record for record in layer if record is not None)
        if len(records) >= count:
            return records[:count]
    raise DataError(
        f"the validation split has only {len(records)} documents of >= {PROBE_TOKENS} tokens for the probe set; lower --probe_count or add data"
    )


def write_probe(records: list[dict], path: Path) -> None:
    write_atomic(path, "".join(json.dumps(record) + "\n" for record in records))


def load_probe_windows(
    path: Union[str, Path] = "datasets/probe_valid.jsonl",
    tokenizer: Union[str, Path, Tokenizer] = "datasets/embedded",
    length: int = PROBE_TOKENS,
    count: Optional[int] = None,
    vocab_size: Optional[int] = None,
    bos_id: Optional[int] = None,
) -> torch.Tensor:
    """The probe texts as a LongTensor (N, length): the first `length` tokens of each text, untransformed
    (a run's fixed or random tokens are applied by the evaluation with the training loader's transform).
    With `bos_id`, that token is written over each window's first token, exactly as the transform of a run
    trained with that BOS (a fixed token at position 0) does: the one rule for a model with a BOS, so a
    checkpoint and its Hugging Face export are probed on the same windows.

    `tokenizer` is a `Tokenizer` or anything `load_tokenizer` accepts, e.g. the dataset folder holding the
    saved `tokenizer.json`. The file is read like any document file (UTF-8 JSON lines with a `text`).
    `count` keeps the first texts only; with `vocab_size`, a tokenizer that yields ids the model does not
    have (the wrong `--tokenizer`) is refused.
    """
    tokenizer = tokenizer if isinstance(tokenizer, Tokenizer) else load_tokenizer(tokenizer)
    path = Path(path)
    if not path.is_file():
        state = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise DataError(
            f"probe file {path} {state}; run preprocess/run_preprocess.sh --source embedded or pass the "
            f"probe_valid.jsonl it wrote"
        )
    if length < 1 or (count is not None and count < 1):
        raise DataError(
            f"{path}: probe windows need at least one token and one text, got length={length}, count={count}"
        )
    ids = [tokenizer.encode(text)[:length] for text in itertools.islice(iter_texts(path), count)]
    short = [index for index, row in enumerate(ids) if len(row) < length]
    if short:
        raise DataError(
            f"{path}: probe texts {short[:5]} have fewer than {length} tokens with {tokenizer.path}; rebuild the probe with this tokenizer"
        )
    windows = torch.tensor(ids, dtype=torch.long)
    if bos_id is not None:
        set_fixed_token(windows, (0, bos_id))
    if vocab_size is not None:
        check_token_ids(windows, vocab_size, f"probe {path} tokenized with {tokenizer.path}")
    return windows
