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
    fix = "re-run preprocessing for this dataset"
    try:
        index = json.loads(index_path.read_text())
        (data_format,) = index["config"]["data_format"]
        serializer, code = data_format.split(":")
        chunks = index["chunks"]
    except (ValueError, KeyError, TypeError, AttributeError):
        raise DataError(f"{index_path}: not a litdata token index; {fix}") from None
    if serializer != "no_header_numpy" or index["config"].get("item_loader") != "TokensLoader":
        raise DataError(f"{index_path}: written without TokensLoader ({data_format}); {fix}")
    dtype = _NUMPY_DTYPES_MAPPING[int(code)]
    parts = []
    for chunk in chunks:
        path = folder / chunk["filename"]
        offset = (chunk["chunk_size"] + 2) * CHUNK_WORD
        expected = offset + chunk["dim"] * dtype.itemsize
        if not path.is_file() or path.stat().st_size != expected:
            raise DataError(f"{path}: missing or not {expected} bytes as {INDEX} says; {fix}")
        if int(np.fromfile(path, dtype=np.uint32, count=1)[0]) != chunk["chunk_size"]:
            raise DataError(f"{path}: chunk header disagrees with {INDEX}; {fix}")
        parts.append((path, dtype, offset, chunk["dim"]))
    return parts
