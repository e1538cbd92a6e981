"""Training and validation loaders over token shards, with the paper's data experiments as options.

Train loader: an endless weighted mixture. Global sample `i` (counted over all ranks) is a pure function
of `(seed, i)`: its dataset is drawn from the mixture weights, and it reads that dataset's next window in
a per-epoch shuffle. Rank `r`'s micro batch at step `s` holds samples `(s * world + r) * B + [0, B)`, so
the loader's entire state is its step and resuming lands on exactly the batch an uninterrupted run
would have produced next, without replaying the skipped ones.

Windows are `block_size + 1` consecutive tokens (inputs are `[:-1]`, targets `[1:]`), non-overlapping, in
the stream of documents packed back to back with EOS. The run's input experiments
(`lit_gpt.data.transforms.InputTransforms`: random token ids over a span, a fixed id at one position)
act on every window; the loss rule for the targets is `lit_gpt.measurement.loss`.
"""

from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from lit_gpt.data.errors import DataError
from lit_gpt.data.stream import TokenStream, open_stream
from lit_gpt.data.transforms import InputTransforms, WindowTransform
from lit_gpt.data.vocab import meta_vocab_size

# Mixture draws are made in blocks of this many samples; any sample is reachable from its block alone.
PLAN_BLOCK = 8192
IGNORE_INDEX = -100


def mask_ignored_prefix(targets: torch.Tensor, n: int) -> torch.Tensor:
    """A copy of `targets` (B, T) whose first `n` positions are `-100`, so the loss ignores them."""
    masked = targets.clone()
    masked[:, :n] = IGNORE_INDEX
    return masked


class MixturePlan:
    """Which (dataset, window) global sample `i` reads, for window counts `sizes` and mixture `weights`."""

    def __init__(self, sizes: list[int], weights: list[float], seed: int) -> None:
        self.sizes = sizes
        self.probabilities = np.asarray(weights, dtype=np.float64) / sum(weights)
        self.seed = seed
        self._starts = [np.zeros(len(sizes), dtype=np.int64)]  # per block: draws of each dataset before it
        self._block: tuple[int, np.ndarray, np.ndarray] = (-1, np.empty(0), np.empty(0))
        self._orders: dict[tuple[int, int], np.ndarray] = {}

    def _draws(self, block: int) -> np.ndarray:
        return np.random.default_rng([self.seed, 0, block]).choice(len(self.sizes), PLAN_BLOCK, p=self.probabilities)

    def _block_plan(self, block: int) -> tuple[np.ndarray, np.ndarray]:
        """The block's dataset draws and, per sample, how many draws of its dataset precede it."""
        if self._block[0] != block:
            while len(self._starts) <= block:
                counts = np.bincount(self._draws(len(self._starts) - 1), minlength=len(self.sizes))
                self._starts.append(self._starts[-1] + counts)
            draws = self._draws(block)
            occurrence = np.empty(PLAN_BLOCK, dtype=np.int64)
            for dataset in range(len(self.sizes)):
                hits = draws == dataset
                occurrence[hits] = self._starts[block][dataset] + np.arange(hits.sum())
            self._block = (block, draws, occurrence)
        return self._block[1], self._block[2]

    def _order(self, dataset: int, epoch: int) -> np.ndarray:
        if (dataset, epoch) not in self._orders:
            if len(self._orders) > 2 * len(self.sizes):
                self._orders.clear()
            rng = np.random.default_rng([self.seed, 1, dataset, epoch])
            self._orders[(dataset, epoch)] = rng.permutation(self.sizes[dataset])
        return self._orders[(dataset, epoch)]

    def locate(self, sample: int) -> tuple[int, int]:
        block, offset = divmod(sample, PLAN_BLOCK)
        draws, occurrence = self._block_plan(block)
        dataset = int(draws[offset])
        epoch, position = divmod(int(occurrence[offset]), self.sizes[dataset])
        return dataset, int(self._order(dataset, epoch)[position])


class MixtureWindows(Dataset):
    """Global sample index -> transformed window, following a `MixturePlan`."""

    def __init__(self, streams: list[TokenStream], plan: MixturePlan, length: int, transform: WindowTransform) -> None:
        self.streams, self.plan, self.length, self.transform = streams, plan, length, transform

    def __getitem__(self, sample: int) -> torch.Tensor:
        dataset, window = self.plan.locate(sample)
        return self.transform(self.streams[dataset].read(window * self.length, self.length), 2, sample)


class _RankSamples:
    """The endless sequence of global sample indices rank `rank` reads, from step `start` on."""

    def __init__(self, start: int, batch: int, rank: int, world_size: int) -> None:
        self.start, self.batch, self.rank, self.world_size = start, batch, rank, world_size

    def __iter__(self) -> Iterator[int]:
        step = self.start
        while True:
            first = (step * self.world_size + self.rank) * self.batch
            yield from range(first, first + self.batch)
            step += 1


class TrainLoader:
    """Endless iterator of LongTensor batches (micro_batch_size, block_size + 1); resumable via its state.

    `state_dict()` records how many batches this rank has yielded; after `load_state_dict`, iteration
    continues with exactly the batch that would have come next.
    """

    def __init__(
        self, dataset: MixtureWindows, micro_batch_size: int, rank: int, world_size: int, num_workers: int
    ) -> None:
        self.dataset = dataset
        self.micro_batch_size, self.rank, self.world_size, self.num_workers = (
            micro_batch_size,
            rank,
            world_size,
            num_workers,
        )
        self.step = 0

    def __iter__(self) -> Iterator[torch.Tensor]:
        samples = _RankSamples(self.step, self.micro_batch_size, self.rank, self.world_size)
        loader = DataLoader(
            self.dataset, batch_size=self.micro_batch_size, sampler=samples, num_workers=self.num_workers
        )
        for batch in loader:
            self.step += 1
            yield batch

    def _layout(self) -> dict:
        return {
            "seed": self.dataset.plan.seed,
            "micro_batch_size": self.micro_batch_size,
            "world_size": self.world_size,
        }

    def state_dict(self) -> dict:
        return {"step": self.step, **self._layout()}

    def load_state_dict(self, state: dict) -> None:
        saved = {key: state[key] for key in self._layout()}
        if saved != self._layout():
            raise DataError(
                f"the checkpoint's data loader state was saved with {saved} but this run uses {self._layout()}; "
                f"resume with the same settings (seed, micro_batch_size, number of devices)"
            )
        self.step = state["step"]


def _window_count(stream: TokenStream, length: int, ratio: float = 1.0) -> int:
    count = int(stream.n_tokens // length * ratio)
    if count < 1:
        raise DataError(
            f"{stream.name} has {stream.n_tokens} tokens, too few for one window of {length} at downsample ratio {ratio}; use a smaller block_size or more data"
        )
    return count


def build_train_loader(
    data_dir: Path,
    train_weights: dict[str, float],
    block_size: int,
    micro_batch_size: int,
    seed: int = 42,
    num_workers: int = 0,
    rank: int = 0,
    world_size: int = 1,
    downsample_ratio: float = 1.0,
    transforms: InputTransforms = InputTransforms(),
    vocab_size: Optional[int] = None,
) -> TrainLoader:
    """The training loader: a mixture of the datasets in `train_weights` (name -> weight, as in the YAML).

    Weights need not sum to 1; zero-weight datasets are not read. `rank`/`world_size` come from the
    trainer (e.g. `fabric.global_rank`, `fabric.world_size`); do not wrap the loader with a distributed
    sampler. `downsample_ratio` keeps only the first fraction of each dataset's windows (nested subsets,
    repeated over more epochs). `transforms` are the run's input experiments: random ids uniform in
    [0, vocab_size) over a span of every window (vocab_size defaults to the one in `meta.json`) and a
    fixed id at one position.
    """
    data_dir = Path(data_dir)
    if not 0 < downsample_ratio <= 1:
        raise ValueError(f"downsample_ratio must be in (0, 1], got {downsample_ratio}")
    chosen = {name: weight for name, weight in train_weights.items() if weight > 0}
    if not chosen or any(weight < 0 for weight in train_weights.values()):
        raise DataError(
            f"train weights {train_weights} need at least one positive weight and none negative; fix the mixture YAML"
        )
    streams = [open_stream(data_dir, name) for name in chosen]
    length = block_size + 1
    plan = MixturePlan(
        [_window_count(stream, length, downsample_ratio) for stream in streams], list(chosen.values()), seed
    )
    transform = transforms.for_windows(seed, vocab_size or meta_vocab_size(data_dir), str(data_dir))
    return TrainLoader(
        MixtureWindows(streams, plan, length, transform), micro_batch_size, rank, world_size, num_workers
    )


class SequentialWindows(Dataset):
    """The windows of one dataset in order, this rank's share (every `world_size`-th window)."""

    def __init__(
        self, stream: TokenStream, length: int, transform: WindowTransform, rank: int, world_size: int
    ) -> None:
        self.stream, self.length, self.transform = stream, length, transform
        self.windows = range(rank, _window_count(stream, length), world_size)

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> torch.Tensor:
        window = self.windows[index]
        return self.transform(self.stream.read(window * self.length, self.length), 3, window)


def build_valid_loaders(
    data_dir: Path,
    valid_names: list[str],
    block_size: int,
    micro_batch_size: int,
    seed: int = 42,
    num_workers: int = 0,
    rank: int = 0,
    world_size: int = 1,
    transforms: InputTransforms = InputTransforms(),
    vocab_size: Optional[int] = None,
) -> dict[str, DataLoader]:
    """One unshuffled loader per validation dataset, keyed by domain (the name without `valid_`).

    `valid_names` are dataset names, e.g. the keys of the YAML's `valid` section (its weights play no
    role here). Each rank reads every `world_size`-th window; the experiment options act as in training.
    """
    data_dir = Path(data_dir)
    transform = transforms.for_windows(seed, vocab_size or meta_vocab_size(data_dir), str(data_dir))
    loaders = {}
    for name in valid_names:
        windows = SequentialWindows(open_stream(data_dir, name), block_size + 1, transform, rank, world_size)
        loaders[name.removeprefix("valid_")] = DataLoader(windows, batch_size=micro_batch_size, num_workers=num_workers)
    return loaders
