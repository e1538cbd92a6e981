"""Reading upstream/TinyLlama `LITPKDS` packed shards, so existing preprocessed data needs no re-tokenizing.

Format of one `.bin` file: the 7 bytes `LITPKDS`, uint64 version (1), uint8 dtype code, uint64 chunk size
(number of tokens), then the tokens. All integers are little-endian.
"""

import struct
from pathlib import Path

import numpy as np

from lit_gpt.data.errors import DataError

MAGIC = b"LITPKDS"
VERSION = 1
HEADER = struct.Struct("<7sQBQ")
DTYPES = {1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64, 6: np.float32, 7: np.float64, 8: np.uint16}


def read_header(path: Path) -> tuple[np.dtype, int, int]:
    """(dtype, number of tokens, byte offset of the tokens) of a packed shard, after checking it is whole."""
    fix = "re-create the shard or remove it from the data folder"
    try:
        with open(path, "rb") as f:
            head = f.read(HEADER.size)
    except OSError as error:
        raise DataError(f"{path}: cannot be read ({error.strerror or error}); {fix}") from None
    if len(head) < HEADER.size:
        raise DataError(f"{path}: truncated LITPKDS header; {fix}")
    magic, version, code, tokens = HEADER.unpack(head)
    if magic != MAGIC or version != VERSION:
        raise DataError(f"{path}: not a LITPKDS v{VERSION} shard (magic {magic!r}, version {version}); {fix}")
    if code not in DTYPES or np.dtype(DTYPES[code]).kind not in "iu":
        raise DataError(f"{path}: dtype code {code} is not an integer token type; {fix}")
    dtype = np.dtype(DTYPES[code])
    size = path.stat().st_size
    if size != HEADER.size + tokens * dtype.itemsize:
        raise DataError(
            f"{path}: header promises {tokens} tokens but the file holds {size - HEADER.size} bytes of data; {fix}"
        )
    return dtype, tokens, HEADER.size
