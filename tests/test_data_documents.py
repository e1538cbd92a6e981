import json

import pyarrow
import pyarrow.parquet
import pytest
import zstandard

from lit_gpt.data.documents import document_files, domain_of, in_valid_split, iter_texts
from lit_gpt.data.errors import DataError

from data_fixtures import write_jsonl


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
        (b'{"text": "ok"}\n{"text": "caf\xe9"}\n', "line 2 is not valid UTF-8"),
        (b"", "empty"),
        (b"\n\n", "empty"),
        (b"{not json\n", "line 1 is not valid JSON"),
    ],
)
def test_bad_jsonl_names_file_and_line(tmp_path, content, message):
    path = tmp_path / "bad-0.jsonl"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message) as error:
        list(iter_texts(path))
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_parquet_without_text_column(tmp_path):
    pyarrow.parquet.write_table(pyarrow.table({"body": ["x"]}), tmp_path / "p.parquet")
    with pytest.raises(DataError, match="no 'text' column"):
        list(iter_texts(tmp_path / "p.parquet"))


def test_empty_or_missing_folder(tmp_path):
    with pytest.raises(DataError, match="holds no .jsonl"):
        document_files(tmp_path)
    with pytest.raises(DataError, match="is not a folder"):
        document_files(tmp_path / "absent")
