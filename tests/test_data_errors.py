"""Every kind of data file, damaged, is one clear error naming the file, also end to end through the training
loader and the probe: documents, tokenizers, shards (litdata and LITPKDS), meta.json and the probe set."""

import shutil

import numpy as np
import pytest
from data_fixtures import prepare_tiny, refused, write_packed

from lit_gpt.data import build_train_loader, load_probe_windows
from lit_gpt.data.prepare import prepare
from lit_gpt.training.run_config import parse_args
from lit_gpt.training.trainer import check_data_dirs


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
    "index.json corrupt": (lambda f: (f / "train_alpha" / "index.json").write_text("{bad"), "train_alpha/index.json"),
    "index.json missing": (lambda f: (f / "train_alpha" / "index.json").unlink(), "train_alpha/index.json"),
    "chunk truncated": (lambda f: chunks(f)[0].write_bytes(chunks(f)[0].read_bytes()[:100]), "chunk-0-0.bin"),
    "chunk missing": (lambda f: chunks(f)[0].unlink(), "chunk-0-0.bin"),
    "meta.json corrupt": (lambda f: (f / "meta.json").write_text("{bad"), "meta.json"),
    "meta.json not UTF-8": (lambda f: (f / "meta.json").write_bytes(b"\xff\xfe{}"), "meta.json"),
    "meta.json without vocab size": (lambda f: (f / "meta.json").write_text('{"tokenizer": {}}'), "meta.json"),
    "meta.json with vocab size -5": (
        lambda f: (f / "meta.json").write_text('{"tokenizer": {"vocab_size": -5}}'),
        "meta.json",
    ),
    "meta.json with vocab size 1": (
        lambda f: (f / "meta.json").write_text('{"tokenizer": {"vocab_size": 1}}'),
        "meta.json",
    ),
}


@pytest.mark.parametrize("damage", list(SHARDS))
def test_damaged_litdata_shards(built, tmp_path, damage):
    make, culprit = SHARDS[damage]
    folder = copy_of(built[1], tmp_path / "data")
    make(folder)
    with refused(culprit):
        first_batch(folder)


def check_a_run_on(folder, vocab_size):
    """The data check a training run makes before its first step, with a model of `vocab_size` entries."""
    check_data_dirs(
        parse_args(
            [
                "--model_name",
                "micro",
                "--train_data_dir",
                str(folder),
                "--eval_sink",
                "false",
                "--model.vocab_size",
                str(vocab_size),
            ]
        )
    )


@pytest.mark.parametrize("meta", ["deleted", '{"tokenizer": {"vocab_size": -5}}', '{"tokenizer": {"vocab_size": 1}}'])
def test_shards_beyond_the_model_vocabulary_are_refused_without_a_meta_json_to_trust(built, tmp_path, meta):
    """Without meta.json the shards' own largest id decides; a meta.json recording no tokenizer's size is damage."""
    folder = copy_of(built[1], tmp_path / "data")
    if meta == "deleted":
        (folder / "meta.json").unlink()
        with refused(folder, r"holds token id 299 .* beyond the model's vocab_size=100; set --model.vocab_size 300"):
            check_a_run_on(folder, 100)
        check_a_run_on(folder, 300)
    else:
        (folder / "meta.json").write_text(meta)
        with refused(folder / "meta.json", "not the size of a tokenizer"):
            check_a_run_on(folder, 100)


@pytest.mark.parametrize(
    "header, match",
    [
        (dict(code=99), "dtype code 99 is not an integer token type"),
        (dict(cut=500), "header promises 1000 tokens"),
        (dict(magic=b"NOTPKDS" + bytes(40)), "not a LITPKDS v1 shard"),
    ],
)
def test_damaged_litpkds_shards_are_refused_not_skipped(tmp_path, header, match):
    path = tmp_path / "train_alpha.bin"
    write_packed(path, np.arange(1000, dtype=np.uint16), code=header.get("code", 8))
    if "cut" in header:
        path.write_bytes(path.read_bytes()[: header["cut"]])
    if "magic" in header:
        path.write_bytes(header["magic"])
    with refused(path, match):
        first_batch(tmp_path)


@pytest.mark.parametrize(
    "content, match",
    [
        (b"not json\n", "line 1 is not valid JSON"),
        (b'{"txt": 1}\n', "line 1 has no string 'text'"),
        (b"[1, 2]\n", "line 1 has no string 'text'"),
        (b'{"text": "caf\xe9"}\n', "line 1 is not valid UTF-8"),
        (b"", "no documents"),
        (
            b'{"text": "a long enough text ' + b"word " * 200 + b'"}\n{"text": "short"}\n',
            r"probe texts \[1\] have fewer than 64 tokens",
        ),
    ],
)
def test_damaged_probe_files(built, tmp_path, content, match):
    probe = tmp_path / "probe.jsonl"
    probe.write_bytes(content)
    with refused(probe, match):
        load_probe_windows(probe, built[1])


def test_a_missing_probe_file_or_a_folder_in_its_place(built, tmp_path):
    with refused(tmp_path / "absent.jsonl", "does not exist.*run preprocess"):
        load_probe_windows(tmp_path / "absent.jsonl", built[1])
    with refused(tmp_path, "is a folder"):
        load_probe_windows(tmp_path, built[1])


def test_probe_windows_longer_than_the_texts_or_none_requested(built):
    probe = built[0] / "probe.jsonl"
    with refused(probe, "fewer than 100000 tokens"):
        load_probe_windows(probe, built[1], length=100_000)
    with refused(probe, "at least one token and one text.*count=0"):
        load_probe_windows(probe, built[1], count=0)


@pytest.mark.parametrize(
    "name, content, match",
    [
        ("tokenizer.json", b'{"model": ', "is not a valid HF tokenizer.json"),
        ("tokenizer.model", b"\x00\x01garbage", "is not a valid SentencePiece model"),
    ],
)
def test_damaged_tokenizers(built, tmp_path, name, content, match):
    (tmp_path / name).write_bytes(content)
    with refused(tmp_path / name, match):
        load_probe_windows(built[0] / "probe.jsonl", tmp_path / name)


def test_a_folder_without_a_tokenizer(built, tmp_path):
    with refused(tmp_path, "holds neither tokenizer.json nor tokenizer.model"):
        load_probe_windows(built[0] / "probe.jsonl", tmp_path)


@pytest.mark.parametrize(
    "name, content, match",
    [
        ("a.jsonl", b'{"text": "caf\xe9"}\n', "line 1 is not valid UTF-8"),
        ("a.jsonl", b"not json\n", "line 1 is not valid JSON"),
        ("a.jsonl", b'{"text": ["not", "a string"]}\n', "line 1 has no string 'text'"),
        ("a.jsonl.zst", b"not zstd\n", "is not a valid zstd file"),
        ("a.parquet", b"not parquet\n", "is not a valid parquet file"),
    ],
)
def test_damaged_documents_are_refused_before_anything_is_written(tmp_path, name, content, match):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / name).write_bytes(content)
    with refused(docs / name, match):
        prepare(
            source="jsonl",
            input_dir=docs,
            output_dir=tmp_path / "out",
            vocab_size=300,
            probe_count=0,
            probe_path=tmp_path / "probe.jsonl",
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs"]


def test_a_damaged_document_met_while_tokenizing_in_a_worker(built, tmp_path):
    """With a given tokenizer no BPE is trained, so the bad file is first read inside a litdata worker."""
    docs = copy_of(built[0] / "docs", tmp_path / "docs")
    (docs / "beta-9.jsonl").write_bytes(b'{"text": "fine"}\n{"text": "caf\xe9"}\n')
    with refused(docs / "beta-9.jsonl", "line 2 is not valid UTF-8"):
        prepare(
            source="jsonl",
            input_dir=docs,
            output_dir=tmp_path / "out",
            tokenizer=str(built[1] / "tokenizer.json"),
            probe_count=0,
            probe_path=tmp_path / "probe.jsonl",
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs"]
