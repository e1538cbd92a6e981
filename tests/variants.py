"""Test helpers over the study's variants (`lit_gpt.variants`) at the `micro` preset."""

from __future__ import annotations

from typing import Any

import torch

from lit_gpt.config import Config
from lit_gpt.variants import VARIANTS


def micro(**overrides: Any) -> Config:
    return Config.from_name("micro", **overrides)


# Softmax variants: the ones the fused backends (SDPA, flex) can compute.
SOFTMAX_VARIANTS = {name: o for name, o in VARIANTS.items() if micro(**o).is_exp_normalized}


def tokens(batch: int = 2, length: int = 12, vocab: int = 128, seed: int = 0) -> torch.Tensor:
    """Reproducible token ids, independent of the global RNG that model init consumes."""
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))
