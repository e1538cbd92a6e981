import json

import pyarrow
import pyarrow.parquet
import pytest
import zstandard
from data_fixtures import refused, write_jsonl

from lit_gpt.data.documents import document_files, domain_of, in_valid_split, iter_texts
from lit_gpt.data.errors import DataError


def test_domain_from_file_name(tmp_path):
    assert domain_of(tmp_path / "pile_cc-24-0001.jsonl") == "pile_cc"
    assert domain_of(tmp_path / "arxiv-3.jsonl.zst") == "arxiv"
    assert domain_of(tmp_path / "code.parquet") == "code"


def test_reads_jsonl_zst_and_parquet(tmp_path):
    texts = ["first doc", "second\nwith newline", "ünïcode ✓"]
    write_jsonl(tmp_path / "a-0.jsonl", texts)
    lines = "".join(json.dumps({"text": text, "meta": 1}) + "\n" for text in texts).encode()
    (tmp_path / "b-0.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(lines))
    pyarrow.parquet.write_table(pyarrow.table({"text": texts}), tmp_path / "c-0.parquet")
    (tmp_path / "notes.txt").write_text("ignored")
    files = document_files(tmp_path)
    assert [path.name for path in files] == ["a-0.jsonl", "b-0.jsonl.zst", "c-0.parquet"]
    for path in files:
        assert list(iter_texts(path)) == texts


def test_hash_split_is_a_partition(tmp_path):
    texts = [f"document {i}" for i in range(400)]
    path = write_jsonl(tmp_path / "d.jsonl", texts)
    train = list(iter_texts(path, "train", 0.25))
    valid = list(iter_texts(path, "valid", 0.25))
    assert sorted(train + valid) == sorted(texts)
    assert 60 < len(valid) < 140
    assert valid == [text for text in texts if in_valid_split(text, 0.25)]


@pytest.mark.parametrize(
    "content, message",
    [
        (b'{"text": "ok"}\n{"body": "no text"}\n', "line 2 has no string 'text'"),
        (b'{"text": "ok"}\n{"text": 5}\n', "line 2 has no string 'text'"),
        (b'["text"]\n', "line 1 has no string 'text'"),
        (b'{"text": "ok"}\n{"text": "caf\xe9"}\n', "line 2 is not valid UTF-8"),
        (b"\x00\x01\xff\xfe binary\n", "line 1 is not valid UTF-8"),
        (b"", "empty"),
        (b"\n\n", "empty"),
        (b"{not json\n", "line 1 is not valid JSON"),
        (b'{"text": "ok"}\n{"text": "cut', "line 2 is not valid JSON"),
        (b"[" * 100_000 + b"\n", "line 1 nests JSON too deeply"),
    ],
)
def test_bad_jsonl_names_file_and_line(tmp_path, content, message):
    path = tmp_path / "bad-0.jsonl"
    path.write_bytes(content)
    with refused(path, message, DataError):
        list(iter_texts(path))


def test_a_folder_named_like_a_document_file(tmp_path):
    (tmp_path / "dir.jsonl").mkdir()
    with refused(tmp_path / "dir.jsonl", "cannot be read", DataError):
        list(iter_texts(tmp_path / "dir.jsonl"))


def _zst(lines: bytes, frames: int = 1) -> bytes:
    step = -(-len(lines) // frames)
    return b"".join(zstandard.ZstdCompressor().compress(lines[i : i + step]) for i in range(0, len(lines), step))


def test_zst_frames_are_all_read_even_split_inside_a_line(tmp_path):
    texts = [f"document {i} " + "x" * (i * 37 % 3000) for i in range(3000)]
    lines = "".join(json.dumps({"text": text}) + "\n" for text in texts).encode()
    path = tmp_path / "d.jsonl.zst"
    path.write_bytes(_zst(lines, frames=3))
    assert list(iter_texts(path)) == texts


@pytest.mark.parametrize(
    "content, message",
    [
        (b"not zstd at all\n", "is not a valid zstd file"),
        (b"", "truncated or empty"),
        (_zst(b'{"text": "caf\xe9"}\n'), "line 1 is not valid UTF-8"),
        (_zst(b'{"text": "ok"}\n' * 5000)[:-20], "truncated or empty"),
        (_zst(b'{"text": "ok"}\n' * 5000, frames=2)[:-5], "truncated or empty"),
    ],
)
def test_bad_zst_names_the_file(tmp_path, content, message):
    path = tmp_path / "bad-0.jsonl.zst"
    path.write_bytes(content)
    with refused(path, message, DataError):
        list(iter_texts(path))


def _parquet(tmp_path, **columns) -> bytes:
    pyarrow.parquet.write_table(pyarrow.table(columns), tmp_path / "source.parquet", row_group_size=100)
    return (tmp_path / "source.parquet").read_bytes()


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda tmp: b"not parquet\n", "is not a valid parquet file"),
        (lambda tmp: b"", "is not a valid parquet file"),
        (lambda tmp: _parquet(tmp, text=[f"doc {i}" for i in range(1000)])[:3000], "is not a valid parquet file"),
        (
            lambda tmp: (lambda data: data[:4] + bytes(2000) + data[2004:])(
                _parquet(tmp, text=[f"doc {i}" for i in range(1000)])
            ),
            "is a damaged parquet file",
        ),
        (lambda tmp: _parquet(tmp, body=["x"]), "no 'text' column"),
        (lambda tmp: _parquet(tmp, text=["x", None]), "'text' value that is not a string"),
        (lambda tmp: _parquet(tmp, text=[1, 2]), "'text' value that is not a string"),
    ],
)
def test_bad_parquet_names_the_file(tmp_path, damage, message):
    path = tmp_path / "p.parquet"
    path.write_bytes(damage(tmp_path))
    with refused(path, message, DataError):
        list(iter_texts(path))


def test_empty_or_missing_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("not a document")
    with refused(tmp_path, "holds no .jsonl", DataError):
        document_files(tmp_path)
    with refused(tmp_path / "absent", "is not a folder", DataError):
        document_files(tmp_path / "absent")
