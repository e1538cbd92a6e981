"""Turning similarity scores into attention weights: weight functions, normalisers, feature maps.

The study's variants differ only here. Scores s = q.k/sqrt(d) (or phi(q).phi(k)/sqrt(d) with a kernel
feature map) go through a weight function and then a row normaliser; softmax is the pair (exp, sum),
computed in the numerically stable fused form.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def elu_plus_one(x: torch.Tensor) -> torch.Tensor:
    """elu(x) + 1: positive, linear for x > 0, like exp for x < 0."""
    return F.elu(x) + 1.0


def log_elu_plus_one(x: torch.Tensor) -> torch.Tensor:
    """log(elu(x) + 1): x itself for x <= 0 (where elu(x) + 1 = exp(x)), log1p(x) above."""
    return torch.where(x > 0, torch.log1p(x.clamp(min=0)), x)


# log of each positive weight function: weights w(s) normalised by their sum are softmax(log w(s)), which
# fused softmax kernels with a score modification compute exactly.
LOG_WEIGHT_FUNCTIONS = {
    "sigmoid": F.logsigmoid,
    "elu": log_elu_plus_one,
}

WEIGHT_FUNCTIONS = {
    "sigmoid": torch.sigmoid,
    "elu": elu_plus_one,
    "linear": lambda s: s,
}


def attention_weights(scores: torch.Tensor, visible: torch.Tensor, score_fn: str, normalize: str) -> torch.Tensor:
    """Weights a row of queries applies to the values; masked keys get exactly 0.

    `visible` broadcasts against `scores` (last dim = keys, including always-visible slots).
    """
    if score_fn == "softmax":
        return torch.softmax(scores.masked_fill(~visible, float("-inf")), dim=-1)
    weights = WEIGHT_FUNCTIONS[score_fn](scores).masked_fill(~visible, 0.0)
    if normalize == "sum":
        return weights / weights.sum(dim=-1, keepdim=True)
    if normalize == "max_abs":
        return weights / weights.sum(dim=-1, keepdim=True).abs().clamp(min=1.0)
    return weights


class FeatureMap(nn.Module):
    """Kernel feature map phi, applied to queries and keys after RoPE (linear-attention variants)."""

    def __init__(self, kind: str, head_size: int, hidden: int = 0) -> None:
        super().__init__()
        self.kind = kind
        if kind == "mlp":
            hidden = hidden or head_size
            self.fc = nn.Linear(head_size, hidden, bias=False)
            self.proj = nn.Linear(hidden, head_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "elu":
            return elu_plus_one(x)
        if self.kind == "mlp":
            return self.proj(F.relu(self.fc(x)))
        return x
