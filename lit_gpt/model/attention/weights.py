"""Turning similarity scores into attention weights: weight functions, normalisers, feature maps.

The study's variants differ only here. Scores s = q.k/sqrt(d) (or phi(q).phi(k)/sqrt(d) with a kernel
feature map) go through a weight function and then a row normaliser; softmax is the pair (exp, sum),
computed in the numerically stable fused form.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F


class _EluPlusOne(torch.autograd.Function):
    """elu(x) + 1 as exp(min(x, 0)) + max(x, 0), with the derivative min(y, 1) read off the output.

    Equal to `F.elu(x) + 1` (to rounding), but CPU's elu goes through expm1, which made the elu variant's
    eager attention step ~1.8x softmax's; exp and one saved tensor are about as fast as sigmoid.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        y = x.clamp(max=0.0).exp_().add_(x.clamp(min=0.0))
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (y,) = ctx.saved_tensors
        return grad * y.clamp(max=1.0)


def elu_plus_one(x: torch.Tensor) -> torch.Tensor:
    """elu(x) + 1: positive, linear for x > 0, like exp for x < 0 (exactly 0 at -inf)."""
    return _EluPlusOne.apply(x)


def log_elu_plus_one(x: torch.Tensor) -> torch.Tensor:
    """log(elu(x) + 1): x itself for x <= 0 (where elu(x) + 1 = exp(x)), log1p(x) above."""
    return torch.where(x > 0, torch.log1p(x.clamp(min=0)), x)


# log of each positive weight function: weights w(s) normalised by their sum are softmax(log w(s)), which
# fused softmax kernels with a score modification compute exactly.
LOG_WEIGHT_FUNCTIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "sigmoid": F.logsigmoid,
    "elu": log_elu_plus_one,
}

WEIGHT_FUNCTIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "sigmoid": torch.sigmoid,
    "elu": elu_plus_one,
    "linear": lambda s: s,
}


# Weight functions that are exactly 0 at a score of -inf: for them the mask is one addition of 0 / -inf
# to the scores (merged with any score bias), which the backward passes through untouched, instead of a
# fill of the weights and a fill of their gradient -- passes over the largest tensor of the layer.
ZERO_AT_MINUS_INF = ("softmax", "sigmoid", "elu")


def attention_weights(
    scores: torch.Tensor, visible: torch.Tensor, score_fn: str, bias: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """The weight function applied to masked scores, before any row normaliser; masked keys get exactly 0.

    Softmax comes out normalised (the fused stable form). `scores` are the raw similarities and are
    overwritten (callers hand over the fresh product, whose backward does not need it); `bias` is an
    additive score bias; `visible` broadcasts against `scores` (last dim = keys, including slots).
    """
    if score_fn in ZERO_AT_MINUS_INF:
        additive = scores.new_zeros(()) if bias is None else bias
        scores = scores.add_(additive.masked_fill(~visible, float("-inf")))
        return torch.softmax(scores, dim=-1) if score_fn == "softmax" else WEIGHT_FUNCTIONS[score_fn](scores)
    if bias is not None:
        scores = scores.add_(bias)
    return WEIGHT_FUNCTIONS[score_fn](scores).masked_fill_(~visible, 0.0)


def row_divisor(weights: torch.Tensor, score_fn: str, normalize: str) -> Optional[torch.Tensor]:
    """What each row of `attention_weights` is divided by, (..., Tq, 1); None when the row is final.

    Returned rather than applied, so that a caller can divide the (Tq, D) output instead of the
    (Tq, Tk) weights: (w / d) @ v = (w @ v) / d.
    """
    if score_fn == "softmax" or normalize == "none":
        return None
    total = weights.sum(dim=-1, keepdim=True)
    return total if normalize == "sum" else total.abs().clamp(min=1.0)


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
