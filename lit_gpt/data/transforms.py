"""The paper's input experiments as one object: what every window of a run goes through.

A run may write a fixed token id at position p of every window (e.g. BOS at 0) and fill positions
[start, end) with random ids. The same edits must reach the training and validation loaders, the probe
windows the trainer measures the sink on, the evaluation of a saved checkpoint and generation; all of
them take an `InputTransforms`, built once from the run's arguments.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional

import numpy as np
import torch

from lit_gpt.data.errors import DataError

# Seed of the random tokens put into the probe (fixed, so sink reports are reproducible).
PROBE_SEED = 1234
# Stream index of probe windows for the random-token generator (training streams count from 0).
PROBE_STREAM = 0


def set_fixed_token(windows: torch.Tensor, fixed_token: tuple[int, int]) -> torch.Tensor:
    """Write token id `fixed_token[1]` at position `fixed_token[0]` of every window (in place)."""
    position, token_id = fixed_token
    windows[..., position] = token_id
    return windows


@dataclass(frozen=True)
class WindowTransform:
    """`InputTransforms` bound to a seed and vocabulary; `key` makes each window's random tokens reproducible."""

    seed: int
    vocab_size: Optional[int] = None
    random_token_range: Optional[tuple[int, int]] = None
    fixed_token: Optional[tuple[int, int]] = None

    def __call__(self, window: np.ndarray, stream: int, key: int) -> torch.Tensor:
        tokens = torch.from_numpy(window)
        if self.random_token_range:
            start, end = self.random_token_range
            rng = np.random.default_rng([self.seed, stream, key])
            tokens[start:end] = torch.from_numpy(rng.integers(0, self.vocab_size, end - start))
        return set_fixed_token(tokens, self.fixed_token) if self.fixed_token else tokens


@dataclass(frozen=True)
class InputTransforms:
    """A fixed token `(position, id)` and a random-token span `[start, end)`, each optional."""

    fixed_token: Optional[tuple[int, int]] = None
    random_token_range: Optional[tuple[int, int]] = None

    def __post_init__(self) -> None:
        for name in ("fixed_token", "random_token_range"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(int(v) for v in value))

    @classmethod
    def of_run(cls, train: Mapping[str, Any]) -> "InputTransforms":
        """From the flat run arguments a checkpoint stores under `train` (older layouts included); a run
        being set up builds its transforms from its typed arguments (`lit_gpt.training.run_plan`)."""
        fixed, span = train.get("fixed_token"), train.get("random_token_range")
        if train.get("fixed_token_pos") is not None:
            fixed = (train["fixed_token_pos"], train.get("fixed_token_id", 1))
        if train.get("random_token_start") is not None:
            span = (train["random_token_start"], train["random_token_end"])
        return cls(fixed or None, span or None)

    def __bool__(self) -> bool:
        return self.fixed_token is not None or self.random_token_range is not None

    def asdict(self) -> dict[str, Optional[tuple[int, int]]]:
        return {"fixed_token": self.fixed_token, "random_token_range": self.random_token_range}

    def for_windows(self, seed: int, vocab_size: Optional[int], source: str = "the data") -> WindowTransform:
        """The per-window transform; random tokens need the vocabulary they are drawn from."""
        if self.random_token_range and not vocab_size:
            raise DataError(
                f"{source} has no meta.json to take the vocabulary size from; pass vocab_size for random tokens"
            )
        return WindowTransform(seed, vocab_size, self.random_token_range, self.fixed_token)

    def apply(self, tokens: torch.Tensor, vocab_size: int, seed: int = PROBE_SEED) -> torch.Tensor:
        """Probe windows (N, T) as the run saw its inputs; random tokens come from a fixed seed."""
        if not self:
            return tokens
        transform = self.for_windows(seed, vocab_size)
        return torch.stack([transform(row.numpy().copy(), PROBE_STREAM, index) for index, row in enumerate(tokens)])


__all__ = ["InputTransforms", "PROBE_SEED", "WindowTransform", "set_fixed_token"]
