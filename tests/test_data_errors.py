"""Every kind of data file, damaged, is one clear error naming the file: documents, tokenizers, shards
(litdata and LITPKDS), meta.json and the probe set."""

import shutil

import numpy as np
import pytest

from data_fixtures import prepare_tiny, write_packed
from lit_gpt.data import build_train_loader, load_probe_windows
from lit_gpt.data.prepare import prepare
from lit_gpt.errors import UserError


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("built")
    return root, prepare_tiny(root)


def first_batch(folder):
    return next(iter(build_train_loader(folder, {"train_alpha": 1.0}, 16, 2, seed=0)))


def copy_of(out, folder):
    shutil.copytree(out, folder)
    return folder


def chunks(folder):
    return sorted((folder / "train_alpha").glob("chunk-*.bin"))


SHARDS = {
    "index.json corrupt": (lambda f: (f / "train_alpha" / "index.json").write_text("{bad"), "index.json"),
    "index.json missing": (lambda f: (f / "train_alpha" / "index.json").unlink(), "train_alpha"),
    "chunk truncated": (lambda f: chunks(f)[0].write_bytes(chunks(f)[0].read_bytes()[:100]), "chunk-0-0.bin"),
    "chunk missing": (lambda f: chunks(f)[0].unlink(), "chunk-0-0.bin"),
    "meta.json corrupt": (lambda f: (f / "meta.json").write_text("{bad"), "meta.json"),
}


@pytest.mark.parametrize("damage", list(SHARDS))
def test_damaged_litdata_shards(built, tmp_path, damage):
    make, culprit = SHARDS[damage]
    folder = copy_of(built[1], tmp_path / "data")
    make(folder)
    with pytest.raises(UserError, match=culprit) as info:
        first_batch(folder)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("header, match", [
    (dict(code=99), "dtype code 99 is not an integer token type"),
    (dict(cut=500), "header promises 1000 tokens"),
    (dict(magic=b"NOTPKDS" + bytes(40)), "not a LITPKDS v1 shard"),
])
def test_damaged_litpkds_shards_are_refused_not_skipped(tmp_path, header, match):
    path = tmp_path / "train_alpha.bin"
    write_packed(path, np.arange(1000, dtype=np.uint16), code=header.get("code", 8))
    if "cut" in header:
        path.write_bytes(path.read_bytes()[:header["cut"]])
    if "magic" in header:
        path.write_bytes(header["magic"])
    with pytest.raises(UserError, match=match):
        first_batch(tmp_path)


@pytest.mark.parametrize("content, match", [
    (b"not json\n", "line 1 is not valid JSON"),
    (b'{"txt": 1}\n', "line 1 has no string 'text'"),
    (b"[1, 2]\n", "line 1 has no string 'text'"),
    (b'{"text": "caf\xe9"}\n', "line 1 is not valid UTF-8"),
    (b"", "no documents"),
])
def test_damaged_probe_files(built, tmp_path, content, match):
    probe = tmp_path / "probe.jsonl"
    probe.write_bytes(content)
    with pytest.raises(UserError, match=match):
        load_probe_windows(probe, built[1])


@pytest.mark.parametrize("name, content, match", [
    ("tokenizer.json", b'{"model": ', "is not a valid HF tokenizer.json"),
    ("tokenizer.model", b"\x00\x01garbage", "is not a valid SentencePiece model"),
])
def test_damaged_tokenizers(built, tmp_path, name, content, match):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(UserError, match=match):
        load_probe_windows(built[0] / "probe.jsonl", tmp_path / name)


def test_a_folder_without_a_tokenizer(built, tmp_path):
    with pytest.raises(UserError, match="holds neither tokenizer.json nor tokenizer.model"):
        load_probe_windows(built[0] / "probe.jsonl", tmp_path)


@pytest.mark.parametrize("name, content, match", [
    ("a.jsonl", b'{"text": "caf\xe9"}\n', "line 1 is not valid UTF-8"),
    ("a.jsonl", b"not json\n", "line 1 is not valid JSON"),
    ("a.jsonl.zst", b"not zstd\n", "is not a valid zstd file"),
    ("a.parquet", b"not parquet\n", "is not a valid parquet file"),
])
def test_damaged_documents_are_refused_before_anything_is_written(tmp_path, name, content, match):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / name).write_bytes(content)
    with pytest.raises(UserError, match=match):
        prepare(source="jsonl", input_dir=docs, output_dir=tmp_path / "out", vocab_size=300, probe_count=0,
                probe_path=tmp_path / "probe.jsonl")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs"]
