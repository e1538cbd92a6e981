import json

import numpy as np
import pytest
from litdata import StreamingDataset, TokensLoader, optimize

from lit_gpt.data.errors import DataError
from lit_gpt.data.stream import open_stream

from data_fixtures import write_packed


def _tokens(i):
    yield np.arange(i * 1000, i * 1000 + 700 + i, dtype=np.uint16)


@pytest.fixture(scope="module")
def litdata_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("litdata")
    optimize(fn=_tokens, inputs=list(range(5)), output_dir=str(root / "train_x"), chunk_bytes="2KB",
             item_loader=TokensLoader(), num_workers=2, reorder_files=False, keep_data_ordered=True, verbose=False)
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
        (lambda data: b"NOTPKDS" + data[7:], "train_a_0.bin: not a LITPKDS v1 shard"),
        (lambda data: data[:20], "truncated"),
        (lambda data: data[:-2], "header promises 100 tokens"),
        (lambda data: data[:15] + b"\x06" + data[16:], "dtype code 6"),
    ],
)
def test_corrupt_packed_header_names_the_file(tmp_path, mangle, message):
    path = write_packed(tmp_path / "train_a_0.bin", np.arange(100, dtype=np.uint16))
    path.write_bytes(mangle(path.read_bytes()))
    with pytest.raises(DataError, match=message) as error:
        open_stream(tmp_path, "train_a")
    assert "train_a" in str(error.value)


def test_corrupt_litdata_chunk_names_the_file(litdata_dir, tmp_path):
    folder = tmp_path / "train_x"
    folder.mkdir()
    for path in (litdata_dir / "train_x").iterdir():
        folder.joinpath(path.name).write_bytes(path.read_bytes())
    chunk = folder / json.loads((folder / "index.json").read_text())["chunks"][0]["filename"]
    chunk.write_bytes(b"\xff\xff\xff\xff" + chunk.read_bytes()[4:])
    with pytest.raises(DataError, match=f"{chunk.name}: chunk header"):
        open_stream(tmp_path, "train_x")
    (folder / "index.json").write_text("{")
    with pytest.raises(DataError, match="index.json: not a litdata token index"):
        open_stream(tmp_path, "train_x")


def test_missing_dataset_says_what_to_do(tmp_path):
    with pytest.raises(DataError, match="no shards for 'train_nope'.*run preprocess"):
        open_stream(tmp_path, "train_nope")
