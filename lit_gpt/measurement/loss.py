"""The language-model loss and the one rule for which next-token predictions it counts.

Why one place: a prefix LM (`prefix_tokens = P`) lets the first P tokens see each other, so predicting
tokens 2..P from inside the prefix reads the answer; those P - 1 predictions must never be trained on
or scored. Training, validation, the probe loss logged during training and the evaluation scripts all
ask `ignored_predictions`, so no entry point can forget the rule or apply it differently.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from lit_gpt.data.loader import IGNORE_INDEX, mask_ignored_prefix
from lit_gpt.model.config import Config


def ignored_predictions(config: Config, ignore_loss: int = 0) -> int:
    """How many leading next-token predictions of each sequence are excluded from the loss: the run's
    `ignore_loss`, and at least P - 1 for a prefix LM."""
    return max(int(ignore_loss or 0), config.prefix_tokens - 1, 0)


def prediction_mask(n_ignored: int, length: int) -> Optional[torch.Tensor]:
    """(length - 1,) bool mask of the predictions of a `length`-token sequence that count; None = all."""
    if n_ignored <= 0:
        return None
    mask = torch.ones(length - 1, dtype=torch.bool)
    mask[:n_ignored] = False
    return mask


def split_batch(batch: torch.Tensor, n_ignored: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs [:, :-1] and targets [:, 1:] of a (B, T + 1) batch, the first `n_ignored` targets masked."""
    inputs, targets = batch[:, :-1], batch[:, 1:]
    return inputs, (mask_ignored_prefix(targets, n_ignored) if n_ignored else targets)


def lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the targets that are not `IGNORE_INDEX`."""
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX)


__all__ = ["ignored_predictions", "lm_loss", "prediction_mask", "split_batch"]
