import json

import numpy as np
import pytest
from data_fixtures import refused, write_packed
from litdata import StreamingDataset, TokensLoader, optimize

from lit_gpt.data.errors import DataError
from lit_gpt.data.stream import open_stream


def _tokens(i):
    yield np.arange(i * 1000, i * 1000 + 700 + i, dtype=np.uint16)


@pytest.fixture(scope="module")
def litdata_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("litdata")
    optimize(
        fn=_tokens,
        inputs=list(range(5)),
        output_dir=str(root / "train_x"),
        chunk_bytes="2KB",
        item_loader=TokensLoader(),
        num_workers=2,
        reorder_files=False,
        keep_data_ordered=True,
        verbose=False,
    )
    return root


def test_litdata_shards_read_as_one_stream(litdata_dir):
    expected = np.concatenate([next(_tokens(i)) for i in range(5)]).astype(np.int64)
    stream = open_stream(litdata_dir, "train_x")
    assert len(stream.parts) > 2, "the test must cross chunk boundaries"
    assert stream.n_tokens == len(expected)
    assert np.array_equal(stream.read(0, len(expected)), expected)
    assert np.array_equal(stream.read(695, 20), expected[695:715])


def test_litdata_tokens_loader_sees_the_same_tokens(litdata_dir):
    """Pins the chunk layout this reader assumes to litdata's own reader."""
    stream = open_stream(litdata_dir, "train_x")
    dataset = StreamingDataset(str(litdata_dir / "train_x"), item_loader=TokensLoader(block_size=10), shuffle=False)
    first_chunk = stream.parts[0][3]
    assert np.array_equal(np.asarray(dataset[0]), stream.read(0, 10))
    assert np.array_equal(np.asarray(dataset[first_chunk // 10 - 1]), stream.read((first_chunk // 10 - 1) * 10, 10))


def test_packed_shards_read_back_exactly(tmp_path):
    rng = np.random.default_rng(0)
    first, second = rng.integers(0, 50_000, 1000).astype(np.uint16), rng.integers(0, 50_000, 333).astype(np.uint16)
    write_packed(tmp_path / "train_the_pile_arxiv_0000000000.bin", first)
    write_packed(tmp_path / "train_the_pile_arxiv_0000000001.bin", second)
    write_packed(tmp_path / "train_other_0000000000.bin", second)
    stream = open_stream(tmp_path, "train_the_pile_arxiv")
    assert np.array_equal(stream.read(0, 1333), np.concatenate([first, second]))
    assert np.array_equal(stream.read(990, 20), np.concatenate([first[990:], second[:10]]))
    int32 = np.arange(40, dtype=np.int32)
    write_packed(tmp_path / "valid_y_0.bin", int32, code=4)
    assert np.array_equal(open_stream(tmp_path, "valid_y").read(0, 40), int32)


@pytest.mark.parametrize(
    "mangle, message",
    [
        (lambda data: b"NOTPKDS" + data[7:], "not a LITPKDS v1 shard"),
        (lambda data: data[:7] + (2).to_bytes(8, "little") + data[15:], "not a LITPKDS v1 shard .*version 2"),
        (lambda data: data[:20], "truncated LITPKDS header"),
        (lambda data: b"", "truncated LITPKDS header"),
        (lambda data: data[:-2], "header promises 100 tokens"),
        (lambda data: data + b"\x00\x00", "header promises 100 tokens"),
        (lambda data: data[:15] + b"\x06" + data[16:], "dtype code 6"),
        (lambda data: data[:15] + b"\x63" + data[16:], "dtype code 99"),
        (lambda data: data[:15] + b"\x04" + data[16:], "header promises 100 tokens"),  # int32 code on uint16 data
    ],
)
def test_corrupt_packed_shard_names_the_file(tmp_path, mangle, message):
    path = write_packed(tmp_path / "train_a_0.bin", np.arange(100, dtype=np.uint16))
    path.write_bytes(mangle(path.read_bytes()))
    with refused(path, message, DataError):
        open_stream(tmp_path, "train_a")


def _copy(litdata_dir, tmp_path):
    folder = tmp_path / "train_x"
    folder.mkdir()
    for path in (litdata_dir / "train_x").iterdir():
        folder.joinpath(path.name).write_bytes(path.read_bytes())
    return folder


def _edit_index(folder, edit):
    index = json.loads((folder / "index.json").read_text())
    edit(index)
    (folder / "index.json").write_text(json.dumps(index))


def _first_chunk(folder):
    return folder / json.loads((folder / "index.json").read_text())["chunks"][0]["filename"]


INDEX_DAMAGE = {
    "not JSON": (lambda f: (f / "index.json").write_text("{"), "not a litdata token index"),
    "not UTF-8": (lambda f: (f / "index.json").write_bytes(b"\xff\xfe{}"), "not a litdata token index"),
    "no chunks": (lambda f: _edit_index(f, lambda i: i.pop("chunks")), "not a litdata token index"),
    "chunk without dim": (lambda f: _edit_index(f, lambda i: i["chunks"][0].pop("dim")), "not a litdata token index"),
    "float tokens": (
        lambda f: _edit_index(f, lambda i: i["config"].update(data_format=["no_header_numpy:9"])),
        "not integer tokens",
    ),
    "unknown dtype code": (
        lambda f: _edit_index(f, lambda i: i["config"].update(data_format=["no_header_numpy:x"])),
        "not integer tokens",
    ),
    "other item loader": (
        lambda f: _edit_index(f, lambda i: i["config"].update(item_loader="PyTreeLoader")),
        "not integer tokens written with TokensLoader",
    ),
}


@pytest.mark.parametrize("damage", list(INDEX_DAMAGE))
def test_damaged_litdata_index_names_it(litdata_dir, tmp_path, damage):
    make, message = INDEX_DAMAGE[damage]
    folder = _copy(litdata_dir, tmp_path)
    make(folder)
    with refused(folder / "index.json", message, DataError):
        open_stream(tmp_path, "train_x")


def test_a_litdata_folder_without_its_index(litdata_dir, tmp_path):
    folder = _copy(litdata_dir, tmp_path)
    (folder / "index.json").unlink()
    with refused(folder / "index.json", "is missing", DataError):
        open_stream(tmp_path, "train_x")


CHUNK_DAMAGE = {
    "missing": (lambda chunk: chunk.unlink(), "missing, yet index.json lists it"),
    "truncated": (lambda chunk: chunk.write_bytes(chunk.read_bytes()[:-7]), "truncated, or written with another dtype"),
    "another dtype": (
        lambda chunk: chunk.write_bytes(
            chunk.read_bytes()[:12] + np.frombuffer(chunk.read_bytes()[12:], np.uint16).astype(np.uint32).tobytes()
        ),
        "written with another dtype",
    ),
    "another header": (
        lambda chunk: chunk.write_bytes(b"\xff\xff\xff\xff" + chunk.read_bytes()[4:]),
        "chunk header disagrees",
    ),
}


@pytest.mark.parametrize("damage", list(CHUNK_DAMAGE))
def test_damaged_litdata_chunk_names_it(litdata_dir, tmp_path, damage):
    make, message = CHUNK_DAMAGE[damage]
    chunk = _first_chunk(_copy(litdata_dir, tmp_path))
    make(chunk)
    with refused(chunk, message, DataError):
        open_stream(tmp_path, "train_x")


def test_missing_dataset_says_what_to_do(tmp_path):
    with refused(tmp_path, "no shards for 'train_nope'.*run preprocess", DataError):
        open_stream(tmp_path, "train_nope")
