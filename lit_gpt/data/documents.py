"""Reading documents (the `text` field) from `.jsonl`, `.jsonl.zst` and `.parquet` files.

Why here and not in each source: the hub download, user folders and the embedded corpus all end up as
such files, so one reader with one set of checks (UTF-8, `text` present, file not empty, compressed or
parquet file whole) serves all. Every problem is a one-line `DataError` naming the file (and line).
"""

import hashlib
import json
from pathlib import Path
from typing import BinaryIO, Collection, Iterator, Optional

import zstandard

from lit_gpt.core.errors import one_line
from lit_gpt.data.errors import DataError

SUFFIXES = (".jsonl", ".jsonl.zst", ".parquet")
# Compressed bytes read at a time: small enough that a highly compressible chunk stays small in memory.
ZSTD_READ_BYTES = 1 << 16


def document_files(folder: Path, outputs: Collection[Path] = ()) -> list[Path]:
    """The document files directly inside `folder`, in sorted (hence reproducible) order.

    `outputs` are files the command itself writes (the probe file): they and their temporaries
    (`.NAME.*`) are never read as documents, whatever their names, or a rebuild would train on them.
    """
    if not folder.is_dir():
        raise DataError(f"{folder} is not a folder; pass a folder of .jsonl/.jsonl.zst/.parquet files")
    own = {Path(path).resolve() for path in outputs}
    files = sorted(
        path
        for path in folder.iterdir()
        if path.is_file() and path.name.endswith(SUFFIXES) and not _is_output(path, own)
    )
    if not files:
        raise DataError(
            f"{folder} holds no .jsonl, .jsonl.zst or .parquet files; put documents there or pick another folder"
        )
    return files


def _is_output(path: Path, outputs: set[Path]) -> bool:
    path = path.resolve()
    return any(
        path == output or (path.parent == output.parent and path.name.startswith(f".{output.name}."))
        for output in outputs
    )


def domain_of(path: Path) -> str:
    """The domain a file belongs to: its name up to the first '-' (`pile_cc-24-a.jsonl` -> `pile_cc`)."""
    name = path.name
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name.split("-")[0]


def in_valid_split(text: str, valid_fraction: float) -> bool:
    """Whether a document belongs to the validation split of a folder without train/valid subfolders.

    Keyed on the content, so the split does not depend on file layout or order and duplicated documents
    never straddle train and valid.
    """
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") < valid_fraction * 2**64


def iter_texts(path: Path, split: Optional[str] = None, valid_fraction: Optional[float] = None) -> Iterator[str]:
    """Yield the `text` of every document in `path`.

    With `valid_fraction`, only the documents of `split` ("train" or "valid") under `in_valid_split`.
    Raises `DataError` on a file with no documents, a line that is not UTF-8 JSON, or a missing `text`.
    """
    texts = _read_parquet(path) if path.name.endswith(".parquet") else _read_jsonl(path)
    found = False
    for text in texts:
        found = True
        if valid_fraction is None or in_valid_split(text, valid_fraction) == (split == "valid"):
            yield text
    if not found:
        raise DataError(f"{path} is empty (no documents); remove it or fill it with JSON lines holding a 'text' field")


def _read_jsonl(path: Path) -> Iterator[str]:
    try:
        with open(path, "rb") as raw:
            lines = _zstd_lines(path, raw) if path.name.endswith(".zst") else raw
            for number, line in enumerate(lines, start=1):
                if line.strip():
                    yield _text_of(path, number, line)
    except OSError as error:
        raise DataError(
            f"{path} cannot be read ({error.strerror or error}); check that it is a readable file"
        ) from None


def _zstd_lines(path: Path, raw: BinaryIO) -> Iterator[bytes]:
    """The lines of every zstd frame in `raw`. A file cut inside a frame (an interrupted download) is an
    error: a streaming reader would silently end early and lose the rest of the documents."""
    pending, decompressor = b"", None
    try:
        while chunk := raw.read(ZSTD_READ_BYTES):
            while chunk:
                if decompressor is None or decompressor.eof:
                    decompressor = zstandard.ZstdDecompressor().decompressobj()
                lines = (pending + decompressor.decompress(chunk)).split(b"\n")
                pending = lines.pop()
                yield from lines
                chunk = decompressor.unused_data if decompressor.eof else b""
    except zstandard.ZstdError as error:
        raise DataError(
            f"{path} is not a valid zstd file ({error}); re-compress it or store it as plain .jsonl"
        ) from None
    if decompressor is None or not decompressor.eof:
        raise DataError(
            f"{path} is truncated or empty (it does not end with a complete zstd frame); download or compress it again"
        )
    yield pending


def _text_of(path: Path, number: int, line: bytes) -> str:
    try:
        record = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        raise DataError(f"{path}: line {number} is not valid UTF-8; re-encode the file as UTF-8") from None
    except json.JSONDecodeError as error:
        raise DataError(
            f"{path}: line {number} is not valid JSON ({error.msg}); write one JSON object per line"
        ) from None
    except RecursionError:
        raise DataError(
            f"{path}: line {number} nests JSON too deeply to read; write one flat JSON object per line"
        ) from None
    text = record.get("text") if isinstance(record, dict) else None
    if not isinstance(text, str):
        raise DataError(
            f"{path}: line {number} has no string 'text' field; every line must be a JSON object with 'text'"
        )
    return text


def _read_parquet(path: Path) -> Iterator[str]:
    import pyarrow
    import pyarrow.parquet

    try:
        table = pyarrow.parquet.ParquetFile(path)
    except (pyarrow.ArrowException, OSError) as error:
        raise DataError(f"{path} is not a valid parquet file ({one_line(error)}); re-export it or use .jsonl") from None
    if "text" not in table.schema_arrow.names:
        raise DataError(f"{path} has no 'text' column; rename the column holding the documents to 'text'")
    try:
        for batch in table.iter_batches(columns=["text"]):
            for text in batch.column(0).to_pylist():
                if not isinstance(text, str):
                    raise DataError(
                        f"{path} has a 'text' value that is not a string; drop null rows or fix the column type"
                    )
                yield text
    except (pyarrow.ArrowException, OSError) as error:
        raise DataError(f"{path} is a damaged parquet file ({one_line(error)}); re-export it or use .jsonl") from None
