"""Tokenizing document files into litdata token shards, on several processes.

Each dataset (one split of one domain) is one `litdata.optimize` run with `TokensLoader`: worker
processes each take whole files, encode their documents in batches, append EOS after every document
and write the ids back to back. Each worker gets a fixed, ordered slice of the files (no work queue, no
reordering by size), so the same inputs and worker count give byte-identical shards.

A worker that fails is reported in one line: bad input and a tokenizer that cannot encode it as the
user error they are, a full disk as the `OSError` it is (the build names the folder and the room it
needs), anything else by its last line. litdata's scratch folder lies inside the build, so a killed build
leaves nothing of it elsewhere.
"""

import functools
import itertools
import json
import os
import re
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
from litdata import TokensLoader, optimize

from lit_gpt.core.errors import UserError
from lit_gpt.core.files import write_atomic
from lit_gpt.data.documents import iter_texts
from lit_gpt.data.errors import DataError
from lit_gpt.data.stream import INDEX
from lit_gpt.data.tokenizer import Tokenizer

DOCS_PER_BATCH = 256
CHUNK_BYTES = "64MB"
ERROR_FILE = "error.txt"
SCRATCH = ".litdata"
# Where litdata keeps its scratch files; it empties the folder at every start.
LITDATA_SCRATCH_VARIABLES = ("DATA_OPTIMIZER_CACHE_FOLDER", "DATA_OPTIMIZER_DATA_CACHE_FOLDER")
OS_ERROR_LINE = re.compile(r"\[Errno (\d+)\] ([^\n]*)")
# The line a traceback ends an exception with: `ZeroDivisionError: division by zero`, `KeyboardInterrupt`.
EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(: .*)?$")


class WorkerFailed(UserError):
    """A tokenization worker stopped on an unexpected error; the message is that error's last line."""


def requested_dtype(requested: Optional[str]) -> Optional[np.dtype]:
    """`--dtype` as a numpy dtype, checked before any work: shards hold unsigned integer token ids."""
    if requested is None:
        return None
    try:
        dtype = np.dtype(requested)
    except TypeError:
        dtype = None
    if dtype is None or dtype.kind != "u":
        raise DataError(
            f"--dtype {requested} is not an unsigned integer type; pass uint16 or uint32, or leave it unset"
        )
    return dtype


def token_dtype(vocab_size: int, requested: Optional[str], tokenizer: str) -> np.dtype:
    """The shard dtype: uint16 when every id fits, else uint32, unless the user forces one."""
    dtype = requested_dtype(requested)
    if dtype is None:
        return np.dtype(np.uint16 if vocab_size <= 2**16 else np.uint32)
    if vocab_size - 1 > np.iinfo(dtype).max:
        raise DataError(
            f"the tokenizer ({tokenizer}) has {vocab_size} ids, more than --dtype {requested} can hold; pass "
            f"--dtype uint32 or leave it unset"
        )
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

    Bad input must not raise inside a worker: the parent would only see litdata's RuntimeError holding a
    traceback. So a user error (a bad document, a tokenizer that cannot encode it) is left in `error_dir`,
    the remaining files are skipped, and `write_dataset` raises it as the one-line error it is.
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
        except UserError as error:
            error_file.write_text(str(error))


def write_dataset(files: list[Path], output_dir: Path, work: TokenizeFile, num_workers: int) -> int:
    """Tokenize `files` into a litdata dataset at `output_dir`; returns its token count (0: nothing written)."""
    error_file = Path(work.error_dir) / ERROR_FILE
    try:
        with _litdata_scratch(Path(work.error_dir) / SCRATCH):
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
    except RuntimeError as error:
        raise _worker_error(str(error), output_dir.name) from None
    if error_file.is_file():
        raise DataError(error_file.read_text())
    index_path = output_dir / INDEX
    index = json.loads(index_path.read_text())
    # litdata stamps the write time; "0" is its documented "unknown" value and keeps reruns identical.
    index["updated_at"] = "0"
    write_atomic(index_path, json.dumps(index, sort_keys=True))
    return sum(chunk["dim"] for chunk in index["chunks"])


@contextmanager
def _litdata_scratch(folder: Path) -> Iterator[None]:
    previous = {name: os.environ.get(name) for name in LITDATA_SCRATCH_VARIABLES}
    os.environ.update({name: str(folder / name.lower()) for name in LITDATA_SCRATCH_VARIABLES})
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        shutil.rmtree(folder, ignore_errors=True)


def _worker_error(report: str, dataset: str) -> Exception:
    """litdata's report of a failed worker (a traceback inside a RuntimeError) as the error it stands for: the
    first exception of the traceback, the cause that litdata's own "Failed processing" wraps."""
    lines = [line.strip() for line in report.splitlines() if line.strip(" .")]
    causes = [line for line in lines if EXCEPTION_LINE.match(line)]
    cause = causes[0] if causes else (lines[-1] if lines else report)
    if (found := OS_ERROR_LINE.search(cause)) is not None:
        return OSError(int(found.group(1)), found.group(2).strip())
    return WorkerFailed(f"a tokenization worker of {dataset} failed ({cause}); nothing was replaced")
