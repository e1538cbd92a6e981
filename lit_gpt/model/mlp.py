"""Feed-forward blocks, chosen by `Config.mlp`: gated (SwiGLU, ReGLU, GeGLU) and plain ones."""

from __future__ import annotations

from functools import partial
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "swiglu": F.silu,
    "reglu": F.relu,
    "geglu": F.gelu,
    "relu": F.relu,
    "gelu": F.gelu,
    "gelu_tanh": partial(F.gelu, approximate="tanh"),
    "swish": F.silu,
}
GATED = ("swiglu", "reglu", "geglu")


class MLP(nn.Module):
    """down(act(gate(x)) * up(x)) for gated kinds, down(act(up(x))) otherwise; biases only with `bias`."""

    def __init__(self, n_embd: int, intermediate_size: int, kind: str, bias: bool = False) -> None:
        super().__init__()
        self.act = ACTIVATIONS[kind]
        self.gate_proj = nn.Linear(n_embd, intermediate_size, bias=bias) if kind in GATED else None
        self.up_proj = nn.Linear(n_embd, intermediate_size, bias=bias)
        self.down_proj = nn.Linear(intermediate_size, n_embd, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate_proj is None:
            return self.down_proj(self.act(self.up_proj(x)))
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))
