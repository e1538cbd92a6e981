"""Which keys a query may see, as small named functions of absolute positions.

Every backend consumes the same rule: eager and SDPA evaluate it on position tensors, FlexAttention
wraps it as a `mask_mod`, flash-attn and xformers are only chosen when their built-in masks are provably
the same rule. Positions (not indices) are used so that a KV cache, or a cache that dropped middle
tokens as in streaming evaluation, masks exactly like a full forward pass.

`n_sink` counts learned sink tokens at positions 0..n_sink-1: they are visible to every later query
(also outside a sliding window), which is what a sink token is for; the prefix of a prefix LM counts
real tokens, so it ends at position n_sink + prefix.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def causal(q_pos: torch.Tensor, k_pos: torch.Tensor) -> torch.Tensor:
    """Key j is visible to query i when j <= i."""
    return k_pos <= q_pos


def sliding_window(q_pos: torch.Tensor, k_pos: torch.Tensor, window: int) -> torch.Tensor:
    """Query i sees keys i-W+1 .. i (W keys including itself)."""
    return (k_pos <= q_pos) & (q_pos - k_pos < window)


def prefix(k_pos: torch.Tensor, end: int) -> torch.Tensor:
    """Keys before `end` are visible to every query, earlier or later (prefix LM)."""
    return k_pos < end


@dataclass(frozen=True)
class MaskSpec:
    """The mask of one attention configuration, evaluated by `visible`."""

    window: int = 0
    prefix: int = 0
    n_sink: int = 0

    @property
    def is_plain_causal(self) -> bool:
        """True when the mask is exactly lower-triangular (what `is_causal=True` kernels compute).

        Sink tokens are then ordinary causal keys. Written as "equal to a plain mask" rather than
        "no window and no prefix", so a mask field added later is never mistaken for causal.
        """
        return self == MaskSpec(n_sink=self.n_sink)

    def visible(self, q_pos: torch.Tensor, k_pos: torch.Tensor) -> torch.Tensor:
        """Boolean visibility of keys at `k_pos` for queries at `q_pos` (broadcasting)."""
        if self.window:
            seen = sliding_window(q_pos, k_pos, self.window)
            if self.n_sink:
                seen = seen | (causal(q_pos, k_pos) & prefix(k_pos, self.n_sink))
        else:
            seen = causal(q_pos, k_pos)
        if self.prefix:
            seen = seen | prefix(k_pos, self.n_sink + self.prefix)
        return seen

    def matrix(self, q_pos: torch.Tensor, k_pos: torch.Tensor) -> torch.Tensor:
        """(Tq, Tk) boolean mask for 1-D position vectors."""
        return self.visible(q_pos[:, None], k_pos[None, :])
