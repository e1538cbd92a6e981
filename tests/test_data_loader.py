import itertools
import json

import numpy as np
import pytest
import torch
from data_fixtures import prepare_tiny, write_packed

from lit_gpt.data import (
    InputTransforms,
    build_train_loader,
    build_valid_loaders,
    load_probe_windows,
    mask_ignored_prefix,
)
from lit_gpt.data.documents import in_valid_split
from lit_gpt.data.errors import DataError
from lit_gpt.data.stream import open_stream
from lit_gpt.data.tokenizer import load_tokenizer

BLOCK = 15


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return prepare_tiny(tmp_path_factory.mktemp("loader"))


def take(loader, n):
    return torch.stack(list(itertools.islice(iter(loader), n)))


def test_round_trip_text_to_loader(data_dir):
    """Shards hold each train document's tokens followed by EOS, in file order, and loaders return them."""
    tokenizer = load_tokenizer(data_dir)
    texts = []
    for path in sorted((data_dir.parent / "docs").glob("alpha-*.jsonl")):
        texts += [json.loads(line)["text"] for line in path.read_text().splitlines()]
    expected = np.concatenate(
        [tokenizer.encode(text) + [tokenizer.eos_id] for text in texts if not in_valid_split(text, 0.2)]
    )
    stream = open_stream(data_dir, "train_alpha")
    assert np.array_equal(stream.read(0, stream.n_tokens), expected)
    (loader,) = build_valid_loaders(data_dir, ["train_alpha"], BLOCK, micro_batch_size=4).values()
    windows = torch.cat(list(loader)).flatten().numpy()
    assert np.array_equal(windows, expected[: len(windows)]) and len(expected) - len(windows) < BLOCK + 1


def test_train_batches_are_windows_of_the_data(data_dir):
    batch = take(build_train_loader(data_dir, {"train_beta": 1.0}, BLOCK, micro_batch_size=8), 3)
    assert batch.shape == (3, 8, BLOCK + 1) and batch.dtype == torch.long
    stream = open_stream(data_dir, "train_beta")
    windows = {tuple(stream.read(i * (BLOCK + 1), BLOCK + 1)) for i in range(stream.n_tokens // (BLOCK + 1))}
    assert all(tuple(row.tolist()) in windows for row in batch.flatten(0, 1))
    # One epoch of a single dataset visits every window exactly once.
    epoch = take(build_train_loader(data_dir, {"train_beta": 1.0}, BLOCK, micro_batch_size=1), len(windows))
    assert {tuple(row.tolist()) for row in epoch.flatten(0, 1)} == windows


def test_mixture_follows_weights(data_dir):
    weights = {"train_alpha": 0.6, "train_beta": 0.3, "train_gamma": 0.1}
    loader = build_train_loader(data_dir, weights, BLOCK, micro_batch_size=100, seed=3)
    owner = {}
    for name in weights:
        stream = open_stream(data_dir, name)
        for i in range(stream.n_tokens // (BLOCK + 1)):
            owner.setdefault(tuple(stream.read(i * (BLOCK + 1), BLOCK + 1)), name)
    rows = take(loader, 40).flatten(0, 1)
    counts = np.array([sum(owner[tuple(r.tolist())] == name for r in rows) for name in weights])
    expected = np.array(list(weights.values())) * len(rows)
    chi_square = ((counts - expected) ** 2 / expected).sum()
    assert chi_square < 13.8, (counts, expected)  # p = 0.001 with 2 degrees of freedom


def test_resume_mid_epoch_gives_the_same_batches(data_dir):
    def make():
        return build_train_loader(
            data_dir,
            {"train_alpha": 1, "train_gamma": 2},
            BLOCK,
            micro_batch_size=3,
            seed=7,
            transforms=InputTransforms(random_token_range=(2, 4)),
            num_workers=1,
        )

    straight = take(make(), 12)
    first = make()
    head = take(first, 5)
    state = first.state_dict()
    resumed = make()
    resumed.load_state_dict(state)
    assert state["step"] == 5
    assert torch.equal(torch.cat([head, take(resumed, 7)]), straight)
    with pytest.raises(DataError, match="same settings"):
        build_train_loader(data_dir, {"train_alpha": 1}, BLOCK, micro_batch_size=4).load_state_dict(state)


def test_ranks_split_the_global_sample_sequence(data_dir):
    def rows(rank, world, batch):
        loader = build_train_loader(
            data_dir, {"train_alpha": 1, "train_beta": 1}, BLOCK, micro_batch_size=batch, rank=rank, world_size=world
        )
        return take(loader, 2)

    single = rows(0, 1, 4)
    assert torch.equal(rows(0, 2, 2)[0], single[0, :2]) and torch.equal(rows(1, 2, 2)[0], single[0, 2:])
    assert torch.equal(rows(1, 2, 2)[1], single[1, 2:])


def test_random_and_fixed_tokens_change_exactly_the_requested_positions(data_dir):
    def make(**options):
        return take(
            build_train_loader(data_dir, {"train_alpha": 1}, BLOCK, micro_batch_size=16, vocab_size=300, **options), 4
        )

    plain = make()
    randomized = make(transforms=InputTransforms(random_token_range=(3, 7)))
    changed = (randomized != plain).any(dim=(0, 1))
    assert changed[3:7].all() and not changed[:3].any() and not changed[7:].any()
    assert randomized.max() < 300
    fixed = make(transforms=InputTransforms(fixed_token=(5, 299)))
    assert (fixed[..., 5] == 299).all()
    assert torch.equal(fixed[..., :5], plain[..., :5]) and torch.equal(fixed[..., 6:], plain[..., 6:])
    both = make(transforms=InputTransforms(random_token_range=(0, 2), fixed_token=(0, 1)))
    assert (both[..., 0] == 1).all()


def test_downsample_keeps_a_prefix_of_each_dataset(data_dir):
    stream = open_stream(data_dir, "train_alpha")
    total = stream.n_tokens // (BLOCK + 1)
    kept = int(total * 0.25)
    rows = take(
        build_train_loader(data_dir, {"train_alpha": 1}, BLOCK, micro_batch_size=kept, downsample_ratio=0.25), 2
    )
    allowed = {tuple(stream.read(i * (BLOCK + 1), BLOCK + 1)) for i in range(kept)}
    assert {tuple(row.tolist()) for row in rows.flatten(0, 1)} == allowed  # two epochs of the subset


def test_valid_loaders_are_unshuffled_and_sharded(data_dir):
    loaders = build_valid_loaders(data_dir, ["valid_alpha", "valid_beta"], BLOCK, micro_batch_size=2)
    assert set(loaders) == {"alpha", "beta"}
    stream = open_stream(data_dir, "valid_alpha")
    first = next(iter(loaders["alpha"]))
    assert torch.equal(first[1], torch.from_numpy(stream.read(BLOCK + 1, BLOCK + 1)))
    halves = [
        torch.cat(list(build_valid_loaders(data_dir, ["valid_alpha"], BLOCK, 2, rank=r, world_size=2)["alpha"]))
        for r in (0, 1)
    ]
    assert len(halves[0]) + len(halves[1]) == len(torch.cat(list(loaders["alpha"])))
    assert torch.equal(halves[1][0], first[1])


def test_mask_ignored_prefix():
    targets = torch.arange(12).view(2, 6)
    masked = mask_ignored_prefix(targets, 3)
    assert (masked[:, :3] == -100).all() and torch.equal(masked[:, 3:], targets[:, 3:])
    assert targets[0, 0] == 0


def test_probe_windows(data_dir):
    probe = data_dir.parent / "probe.jsonl"
    windows = load_probe_windows(probe, data_dir)
    records = [json.loads(line) for line in probe.read_text().splitlines()]
    tokenizer = load_tokenizer(data_dir)
    assert windows.shape == (5, 64)
    assert windows[0].tolist() == tokenizer.encode(records[0]["text"])[:64]
    with_bos = load_probe_windows(probe, data_dir, bos_id=7)
    # the BOS takes the first token's place, as training writes a run's BOS over every window's first token
    assert with_bos.shape == (5, 64) and (with_bos[:, 0] == 7).all() and torch.equal(with_bos[:, 1:], windows[:, 1:])
    assert torch.equal(with_bos, InputTransforms(fixed_token=(0, 7)).apply(windows, tokenizer.vocab_size))


def test_loader_errors(data_dir, tmp_path):
    with pytest.raises(DataError, match="no shards for 'train_missing'"):
        build_train_loader(data_dir, {"train_alpha": 1, "train_missing": 1}, BLOCK, 2)
    with pytest.raises(DataError, match="too few for one window"):
        build_train_loader(data_dir, {"train_alpha": 1}, 10**7, 2)
    write_packed(tmp_path / "train_p_0.bin", np.arange(100, dtype=np.uint16))
    with pytest.raises(DataError, match="pass vocab_size"):
        build_train_loader(tmp_path, {"train_p": 1}, BLOCK, 2, transforms=InputTransforms(random_token_range=(0, 1)))
    assert take(build_train_loader(tmp_path, {"train_p": 1}, 9, 2), 1).max() < 100
