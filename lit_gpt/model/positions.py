"""Position encodings, chosen by `Config.pos_embedding`.

Two kinds: input encodings added to the token embeddings (`absolute` sinusoids, `learnable` table)
and attention-level ones -- RoPE rotates queries and keys, ALiBi and T5 relative buckets add a per-head
bias to the scores. All take absolute position tensors so a KV cache sees the same encoding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn


# --------------------------------------------------------------------------------------- RoPE
def rope_cos_sin(
    positions: torch.Tensor, head_size: int, base: float, dtype: torch.dtype, scaling: Optional["RopeScaling"] = None
):
    """cos/sin tables (T, head_size) for NeoX-style RoPE (rotation of the two halves)."""
    inv_freq = 1.0 / (base ** (torch.arange(0, head_size, 2, device=positions.device).float() / head_size))
    if scaling is not None:
        inv_freq = scaling.apply(inv_freq)
    freqs = positions.float()[:, None] * inv_freq[None, :]
    angles = torch.cat((freqs, freqs), dim=-1)
    return angles.cos().to(dtype), angles.sin().to(dtype)


@dataclass(frozen=True)
class RopeScaling:
    """Long-context scaling of RoPE frequencies, as HF LLaMAs define it (`Config.rope_scaling`).

    `linear` divides every inverse frequency by `factor`. `llama3` divides only the low frequencies
    (wavelength above original / low_freq_factor), keeps the high ones (wavelength below original /
    high_freq_factor) and interpolates smoothly in between; both leave the attention scale alone.
    """

    kind: str = "default"
    factor: float = 1.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_seq_len: int = 8192

    @classmethod
    def from_config(cls, config) -> Optional["RopeScaling"]:
        if config.rope_scaling == "default":
            return None
        return cls(
            config.rope_scaling,
            config.rope_scaling_factor,
            config.rope_low_freq_factor,
            config.rope_high_freq_factor,
            config.rope_original_max_seq_len,
        )

    def apply(self, inv_freq: torch.Tensor) -> torch.Tensor:
        if self.kind == "linear":
            return inv_freq / self.factor
        wavelength = 2 * math.pi / inv_freq
        low_cutoff = self.original_max_seq_len / self.low_freq_factor
        high_cutoff = self.original_max_seq_len / self.high_freq_factor
        scaled = torch.where(wavelength > low_cutoff, inv_freq / self.factor, inv_freq)
        smooth = (self.original_max_seq_len / wavelength - self.low_freq_factor) / (
            self.high_freq_factor - self.low_freq_factor
        )
        smoothed = (1 - smooth) * scaled / self.factor + smooth * scaled
        between = (wavelength >= high_cutoff) & (wavelength <= low_cutoff)
        return torch.where(between, smoothed, scaled)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x (..., T, head_size) by position; the first and second halves form the pairs."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


# -------------------------------------------------------------------------------------- ALiBi
def alibi_slopes(n_head: int) -> torch.Tensor:
    """Per-head slopes of ALiBi (Press et al.), including the interpolation for non-powers of two."""

    def powers(n: int) -> list[float]:
        start = 2 ** (-8 / n)
        return [start ** (i + 1) for i in range(n)]

    closest = 2 ** math.floor(math.log2(n_head))
    slopes = powers(closest)
    if closest < n_head:
        slopes += powers(2 * closest)[0::2][: n_head - closest]
    return torch.tensor(slopes)


class ALiBi(nn.Module):
    """Score bias -slope_h * |i - j|: attention decays linearly with distance."""

    def __init__(self, n_head: int) -> None:
        super().__init__()
        self.n_head = n_head

    def forward(self, q_pos: torch.Tensor, k_pos: torch.Tensor) -> torch.Tensor:
        slopes = alibi_slopes(self.n_head).to(q_pos.device)
        distance = (q_pos[:, None] - k_pos[None, :]).abs().float()
        return -slopes[:, None, None] * distance


# ----------------------------------------------------------------------------------- T5 relative
def relative_bucket(relative: torch.Tensor, n_buckets: int, max_distance: int) -> torch.Tensor:
    """T5's unidirectional bucketing of key - query offsets: exact when near, logarithmic when far."""
    distance = (-relative).clamp(min=0)
    exact = n_buckets // 2
    far = (
        exact
        + (
            torch.log(distance.float().clamp(min=1) / exact) / math.log(max_distance / exact) * (n_buckets - exact)
        ).long()
    )
    far = far.clamp(max=n_buckets - 1)
    return torch.where(distance < exact, distance, far)


class RelativeBias(nn.Module):
    """Learned per-head bias looked up by T5 relative-position bucket (one table for all layers)."""

    def __init__(self, n_head: int, n_buckets: int, max_distance: int) -> None:
        super().__init__()
        self.n_buckets, self.max_distance = n_buckets, max_distance
        self.table = nn.Embedding(n_buckets, n_head)

    def forward(self, q_pos: torch.Tensor, k_pos: torch.Tensor) -> torch.Tensor:
        buckets = relative_bucket(k_pos[None, :] - q_pos[:, None], self.n_buckets, self.max_distance)
        return self.table(buckets).permute(2, 0, 1)


# ---------------------------------------------------------------------------------- input encodings
def sinusoidal(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """Fixed sin/cos encoding of "Attention Is All You Need" (T, dim)."""
    inv_freq = torch.exp(torch.arange(0, dim, 2, device=positions.device).float() * (-math.log(10000.0) / dim))
    angles = positions.float()[:, None] * inv_freq[None, :]
    table = torch.zeros(positions.shape[0], dim, device=positions.device)
    table[:, 0::2] = angles.sin()
    table[:, 1::2] = angles.cos()[:, : dim // 2]
    return table
