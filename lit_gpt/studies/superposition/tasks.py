"""The skip-trigram tasks of the superposition study: a Latin rectangle of source -> output maps, one
destination token per task, and the sequences drawn from them."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Batch:
    """Sequences (N, T) whose last token is a task's destination; `target` is the token to predict there."""

    idx: torch.Tensor
    task: torch.Tensor
    source: torch.Tensor
    source_pos: torch.Tensor
    target: torch.Tensor


@dataclass(frozen=True)
class SkipTrigrams:
    """The dataset: filler tokens, one source token at a random earlier position, the destination last.

    Vocabulary, in this order: `n_filler` fillers, `n_sources` sources, one destination per task, and
    `n_sources` outputs. `table[t, s]` is the output (0-based among the outputs) of task t for source s.
    """

    n_tasks: int
    n_sources: int
    n_filler: int
    seq_len: int
    table: torch.Tensor

    @property
    def first_source(self) -> int:
        return self.n_filler

    @property
    def first_destination(self) -> int:
        return self.n_filler + self.n_sources

    @property
    def first_output(self) -> int:
        return self.first_destination + self.n_tasks

    @property
    def vocab_size(self) -> int:
        return self.first_output + self.n_sources

    def make(self, task: torch.Tensor, source: torch.Tensor, generator: torch.Generator) -> Batch:
        """One sequence per (task, source) pair given: random fillers and source position."""
        n = task.numel()
        idx = torch.randint(0, self.n_filler, (n, self.seq_len), generator=generator)
        source_pos = torch.randint(0, self.seq_len - 1, (n,), generator=generator)
        idx[torch.arange(n), source_pos] = self.first_source + source
        idx[:, -1] = self.first_destination + task
        target = self.first_output + self.table[task, source]
        return Batch(idx, task, source, source_pos, target)

    def sample(self, n: int, generator: torch.Generator) -> Batch:
        """`n` sequences with uniformly drawn tasks and sources."""
        task = torch.randint(0, self.n_tasks, (n,), generator=generator)
        source = torch.randint(0, self.n_sources, (n,), generator=generator)
        return self.make(task, source, generator)

    def every_pair(self, repeats: int, generator: torch.Generator) -> Batch:
        """Each (task, source) pair `repeats` times: an evaluation set balanced over tasks and sources."""
        task = torch.arange(self.n_tasks).repeat_interleave(self.n_sources * repeats)
        source = torch.arange(self.n_sources).repeat_interleave(repeats).repeat(self.n_tasks)
        return self.make(task, source, generator)


def latin_rows(n_rows: int, n: int, generator: torch.Generator) -> torch.Tensor:
    """(n_rows, n): each row a permutation of 0..n-1 and any two rows different in every column.

    Rows of the addition table of Z_n with rows, columns and symbols relabelled at random.
    """
    rows = torch.randperm(n, generator=generator)[:n_rows]
    columns = torch.randperm(n, generator=generator)
    symbols = torch.randperm(n, generator=generator)
    return symbols[(rows[:, None] + columns[None, :]) % n]
