"""Random access to one dataset's tokens as a single stream, from litdata shards or LITPKDS files.

Why not litdata's `StreamingDataset`: its `TokensLoader` cuts windows inside each chunk, so a window's
position depends on the chunk layout and the tail of every chunk is dropped. Reading the chunk files as
one concatenated, memory-mapped stream keeps every token, makes window `i` simply tokens
`[i * L, (i + 1) * L)`, and lets the sampler in `lit_gpt.data.loader` address any window in O(1), which
is what exact resume needs. The shards stay ordinary litdata datasets (`optimize` + `TokensLoader`).
"""

import json
from pathlib import Path

import numpy as np
from litdata.constants import _NUMPY_DTYPES_MAPPING

from lit_gpt.data import packed
from lit_gpt.data.errors import DataError

INDEX = "index.json"
# A litdata chunk starts with uint32 item count and uint32 offsets (count + 1 of them); tokens follow.
CHUNK_WORD = 4
REBUILD = "re-run preprocessing for this dataset"


class TokenStream:
    """The concatenated tokens of shard files, each given as (path, dtype, byte offset, token count)."""

    def __init__(self, name: str, parts: list[tuple[Path, np.dtype, int, int]]) -> None:
        self.name = name
        self.parts = parts
        self.starts = np.cumsum([0] + [count for *_, count in parts])
        self.n_tokens = int(self.starts[-1])
        self._maps: dict[int, np.memmap] = {}

    def __getstate__(self) -> dict:
        # Memory maps are reopened in each DataLoader worker instead of being pickled as arrays.
        return {**self.__dict__, "_maps": {}}

    def _map(self, index: int) -> np.memmap:
        if index not in self._maps:
            path, dtype, offset, count = self.parts[index]
            self._maps[index] = np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=(count,))
        return self._maps[index]

    def largest(self) -> int:
        """The largest token id of the stream (-1 when it is empty), read part by part from the memory maps."""
        return max((int(self._map(index).max()) for index, (*_, count) in enumerate(self.parts) if count), default=-1)

    def read(self, start: int, length: int) -> np.ndarray:
        """Tokens `[start, start + length)` as int64, crossing file boundaries as needed."""
        if start < 0 or start + length > self.n_tokens:
            raise IndexError(f"tokens [{start}, {start + length}) outside {self.name} ({self.n_tokens} tokens)")
        out = np.empty(length, dtype=np.int64)
        filled = 0
        part = int(np.searchsorted(self.starts, start, side="right")) - 1
        while filled < length:
            begin = start + filled - int(self.starts[part])
            take = min(length - filled, self.parts[part][3] - begin)
            out[filled : filled + take] = self._map(part)[begin : begin + take]
            filled += take
            part += 1
        return out


def open_stream(data_dir: Path, name: str) -> TokenStream:
    """The dataset `name` (e.g. `train_code`) in `data_dir`.

    Either a litdata folder `data_dir/name/` with `index.json`, or upstream LITPKDS files
    `data_dir/name*.bin` (the prefix match upstream's YAML names rely on), read in sorted order.
    """
    folder = data_dir / name
    if (folder / INDEX).is_file():
        return TokenStream(name, _litdata_parts(folder))
    # Every matching .bin is read as a shard: a damaged one is refused by name, never skipped silently.
    files = sorted(path for path in data_dir.glob(f"{name}*.bin") if path.is_file())
    if not files and folder.is_dir():
        raise DataError(f"{folder / INDEX} is missing, so {folder} is not a complete litdata dataset; {REBUILD}")
    if not files:
        raise DataError(
            f"no shards for '{name}' in {data_dir}: expected {folder}/{INDEX} or LITPKDS files {name}*.bin; "
            "run preprocess/run_preprocess.sh or fix the domain name in the mixture YAML"
        )
    parts = []
    for path in files:
        dtype, count, offset = packed.read_header(path)
        parts.append((path, dtype, offset, count))
    return TokenStream(name, parts)


def _litdata_parts(folder: Path) -> list[tuple[Path, np.dtype, int, int]]:
    index_path = folder / INDEX
    dtype, chunks = _read_index(index_path)
    return [_chunk_part(folder / name, dtype, items, tokens) for name, items, tokens in chunks]


def _read_index(index_path: Path) -> tuple[np.dtype, list[tuple[str, int, int]]]:
    """The token dtype and each chunk's (file name, item count, token count) that a litdata index lists."""
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
        (data_format,) = index["config"]["data_format"]
        serializer, code = data_format.split(":")
        loader = index["config"].get("item_loader")
        chunks = [(str(chunk["filename"]), int(chunk["chunk_size"]), int(chunk["dim"])) for chunk in index["chunks"]]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise DataError(
            f"{index_path}: not a litdata token index (unreadable, damaged or incomplete JSON); {REBUILD}"
        ) from None
    dtype = _NUMPY_DTYPES_MAPPING.get(int(code)) if code.isdigit() else None
    if serializer != "no_header_numpy" or loader != "TokensLoader" or dtype is None or dtype.kind not in "iu":
        raise DataError(
            f"{index_path}: not integer tokens written with TokensLoader ({data_format}, {loader}); {REBUILD}"
        )
    return dtype, chunks


def _chunk_part(path: Path, dtype: np.dtype, items: int, tokens: int) -> tuple[Path, np.dtype, int, int]:
    """(path, dtype, byte offset, token count) of one chunk, after checking the file is what the index says."""
    offset = (items + 2) * CHUNK_WORD
    expected = offset + tokens * dtype.itemsize
    if not path.is_file():
        raise DataError(f"{path}: missing, yet {INDEX} lists it; {REBUILD}")
    size = path.stat().st_size
    if size != expected:
        raise DataError(
            f"{path}: {size} bytes, not the {expected} that {INDEX} gives for {tokens} {dtype.name} tokens "
            f"(truncated, or written with another dtype); {REBUILD}"
        )
    if int(np.fromfile(path, dtype=np.uint32, count=1)[0]) != items:
        raise DataError(f"{path}: chunk header disagrees with {INDEX}; {REBUILD}")
    return path, dtype, offset, tokens
