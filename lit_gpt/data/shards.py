"""Tokenizing document files into litdata token shards, on several processes.

Each dataset (one split of one domain) is one `litdata.optimize` run with `TokensLoader`: worker
processes each take whole files, encode their documents in batches, append EOS after every document
and write the ids back to back. Each worker gets a fixed, ordered slice of the files (no work queue, no
reordering by size), so the same inputs and worker count give byte-identical shards.
"""

import functools
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
from litdata import TokensLoader, optimize

from lit_gpt.data.documents import iter_texts
from lit_gpt.data.errors import DataError
from lit_gpt.data.stream import INDEX
from lit_gpt.tokenizer import Tokenizer

DOCS_PER_BATCH = 256
CHUNK_BYTES = "64MB"
ERROR_FILE = "error.txt"


def requested_dtype(requested: Optional[str]) -> Optional[np.dtype]:
    """`--dtype` as a numpy dtype, checked before any work: shards hold unsigned integer token ids."""
    if requested is None:
        return None
    try:
        dtype = np.dtype(requested)
    except TypeError:
        dtype = None
    if dtype is None or dtype.kind != "u":
        raise DataError(f"--dtype {requested} is not an unsigned integer type; pass uint16 or uint32, or leave it unset")
    return dtype


def token_dtype(vocab_size: int, requested: Optional[str], tokenizer: str) -> np.dtype:
    """The shard dtype: uint16 when every id fits, else uint32, unless the user forces one."""
    dtype = requested_dtype(requested)
    if dtype is None:
        return np.dtype(np.uint16 if vocab_size <= 2**16 else np.uint32)
    if vocab_size - 1 > np.iinfo(dtype).max:
        raise DataError(f"the tokenizer ({tokenizer}) has {vocab_size} ids, more than --dtype {requested} can hold; pass "
                        f"--dtype uint32 or leave it unset")
    return dtype


def pack_documents(ids: list[list[int]], eos_id: int, dtype: np.dtype) -> np.ndarray:
    """Documents' ids back to back, each followed by EOS."""
    lengths = np.fromiter((len(doc) + 1 for doc in ids), dtype=np.int64, count=len(ids))
    out = np.full(int(lengths.sum()), eos_id, dtype=dtype)
    is_text = np.ones(len(out), dtype=bool)
    is_text[np.cumsum(lengths) - 1] = False
    out[is_text] = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int64, count=int(is_text.sum()))
    return out


@functools.lru_cache(maxsize=1)
def _worker_tokenizer(path: str) -> Tokenizer:
    return Tokenizer(path)


@dataclass(frozen=True)
class TokenizeFile:
    """The litdata work function: one document file -> token arrays.

    Bad input must not raise inside a worker: litdata then terminates its workers but orphans their
    helper processes, and the parent only sees a RuntimeError with a traceback. So a `DataError` is left
    in `error_dir`, the remaining files are skipped, and `write_dataset` raises it as the one-line error
    it is.
    """

    tokenizer_path: str
    dtype: str
    split: str
    valid_fraction: Optional[float]
    error_dir: str

    def __call__(self, path: str) -> Iterator[np.ndarray]:
        error_file = Path(self.error_dir) / ERROR_FILE
        if error_file.exists():
            return
        tokenizer = _worker_tokenizer(self.tokenizer_path)
        texts = iter_texts(Path(path), self.split, self.valid_fraction)
        try:
            while batch := list(itertools.islice(texts, DOCS_PER_BATCH)):
                yield pack_documents(tokenizer.encode_batch(batch), tokenizer.eos_id, np.dtype(self.dtype))
        except DataError as error:
            error_file.write_text(str(error))


def write_dataset(files: list[Path], output_dir: Path, work: TokenizeFile, num_workers: int) -> int:
    """Tokenize `files` into a litdata dataset at `output_dir`; returns its token count (0: nothing written)."""
    error_file = Path(work.error_dir) / ERROR_FILE
    optimize(
        fn=work,
        inputs=[str(path) for path in files],
        output_dir=str(output_dir),
        chunk_bytes=CHUNK_BYTES,
        num_workers=max(1, min(num_workers, len(files))),
        item_loader=TokensLoader(),
        reorder_files=False,
        keep_data_ordered=True,
        start_method="fork",
        verbose=False,
    )
    if error_file.is_file():
        raise DataError(error_file.read_text())
    index_path = output_dir / INDEX
    index = json.loads(index_path.read_text())
    # litdata stamps the write time; "0" is its documented "unknown" value and keeps reruns identical.
    index["updated_at"] = "0"
    index_path.write_text(json.dumps(index, sort_keys=True))
    return sum(chunk["dim"] for chunk in index["chunks"])
