"""Test helpers over the study's variants (`lit_gpt.model.variants`) at the `micro` preset."""

from __future__ import annotations

from typing import Any

import torch

from lit_gpt.model.config import Config
from lit_gpt.model.variants import VARIANTS


def micro(**overrides: Any) -> Config:
    return Config.from_name("micro", **overrides)


def is_softmax(config: Config) -> bool:
    """Plain exp-normalised attention: the family the fused backends (SDPA, flex) compute."""
    return (config.attn_score, config.attn_kernel, config.attn_normalize) == ("softmax", "none", "sum")


def flex_computes(config: Config) -> bool:
    """softmax, sigmoid or elu+1 scores (no kernel feature map) with a sum or no normaliser."""
    return (
        config.attn_kernel == "none"
        and config.attn_score in ("softmax", "sigmoid", "elu")
        and config.attn_normalize in ("sum", "none")
    )


SOFTMAX_VARIANTS = {name: o for name, o in VARIANTS.items() if is_softmax(micro(**o))}


def tokens(batch: int = 2, length: int = 12, vocab: int = 128, seed: int = 0) -> torch.Tensor:
    """Reproducible token ids, independent of the global RNG that model init consumes."""
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))
