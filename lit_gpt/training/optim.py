"""AdamW with a documented weight-decay split, and the learning-rate schedule (warmup, then cosine or cooldown).

Weight decay: upstream decayed every parameter (one AdamW group). That is the default here too,
because the paper reports that weight decay strengthens the attention sink, so which parameters it
touches is part of the experiment. `decay_norms_and_biases=False` gives the common alternative:
no decay for norm gains, 1-d biases and the attention's learned key/value slots (k*, v*, sink
logit), which act as biases; matrices and embeddings keep it.
"""

from __future__ import annotations

import math
from typing import Iterator

import torch
import torch.nn as nn

# Parameters living under these module names are bias-like even when stored as 2-d tensors.
BIAS_LIKE_MODULES = (".slots.",)


def is_bias_like(name: str, param: torch.Tensor) -> bool:
    """Norm gains, biases and attention key/value slots: the parameters exempt from decay on request."""
    return param.ndim < 2 or any(part in f".{name}" for part in BIAS_LIKE_MODULES)


def param_groups(model: nn.Module, weight_decay: float, decay_norms_and_biases: bool = True) -> list[dict]:
    """AdamW parameter groups: one decayed group, plus an undecayed one for bias-like parameters."""
    named: Iterator = ((n, p) for n, p in model.named_parameters() if p.requires_grad)
    if decay_norms_and_biases:
        return [{"params": [p for _, p in named], "weight_decay": weight_decay}]
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, param in named:
        (no_decay if is_bias_like(name, param) else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(
    model: nn.Module,
    learning_rate: float,
    weight_decay: float,
    betas: tuple[float, float],
    decay_norms_and_biases: bool = True,
) -> torch.optim.AdamW:
    """AdamW, fused when the parameters live on CUDA (the fastest kernel there; not available on CPU)."""
    on_cuda = next(model.parameters()).device.type == "cuda"
    return torch.optim.AdamW(
        param_groups(model, weight_decay, decay_norms_and_biases), lr=learning_rate, betas=betas, fused=on_cuda
    )


def learning_rate_at(
    step: int,
    learning_rate: float,
    min_lr: float,
    warmup_steps: int,
    max_step: int,
    decay_lr: bool = True,
    cooldown_steps: int = 0,
) -> float:
    """Learning rate for optimizer step `step` (0-based): linear warmup, then down to `min_lr` at `max_step`.

    Warmup reaches the full rate at step `warmup_steps - 1`, so the first step already moves the
    weights (upstream's iteration-level schedule started at exactly 0). After warmup the rate follows a
    cosine to `min_lr` over the rest of the run; with `cooldown_steps > 0` it instead holds the full rate
    and falls linearly to `min_lr` over the last `cooldown_steps` steps (warmup-stable-decay), so a run
    keeps the high rate that brings the sink forward for most of its steps and still ends annealed. A
    cooldown longer than the steps after warmup starts right after warmup. After `max_step` the rate
    stays at `min_lr`. `decay_lr=False` keeps the rate constant (upstream's switch of the same name).
    """
    if not decay_lr:
        return learning_rate
    if step < warmup_steps:
        return learning_rate * (step + 1) / warmup_steps
    if step >= max_step:
        return min_lr
    if cooldown_steps > 0:
        decay_start = max(warmup_steps, max_step - cooldown_steps)
        if step < decay_start:
            return learning_rate
        return learning_rate + (min_lr - learning_rate) * (step - decay_start) / (max_step - decay_start)
    progress = (step - warmup_steps) / max(1, max_step - warmup_steps)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (learning_rate - min_lr)


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
