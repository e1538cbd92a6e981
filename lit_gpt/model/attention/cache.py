"""Key/value cache for incremental decoding and streaming evaluation.

Keys are stored after RoPE (and after the kernel feature map), together with their absolute
positions, so attention over a cache -- even one that dropped middle tokens, as an attention-sink
streaming cache does -- masks and encodes positions exactly like a full forward pass.
"""

from __future__ import annotations

from typing import Optional

import torch


class LayerCache:
    """Cached keys/values (B, G, S, D) and positions (S,) of one layer."""

    def __init__(self) -> None:
        self.k: Optional[torch.Tensor] = None
        self.v: Optional[torch.Tensor] = None
        self.pos: Optional[torch.Tensor] = None

    def update(self, k: torch.Tensor, v: torch.Tensor, pos: torch.Tensor):
        """Append new entries and return everything cached."""
        if self.k is None or self.v is None or self.pos is None:
            self.k, self.v, self.pos = k, v, pos
        else:
            self.k = torch.cat((self.k, k), dim=2)
            self.v = torch.cat((self.v, v), dim=2)
            self.pos = torch.cat((self.pos, pos))
        return self.k, self.v, self.pos

    def keep(self, index: torch.Tensor) -> None:
        """Keep only the cache entries at `index` (e.g. first n sink tokens + a recent window)."""
        assert self.k is not None and self.v is not None and self.pos is not None, "keep() on an empty cache"
        self.k, self.v, self.pos = self.k[:, :, index], self.v[:, :, index], self.pos[index]

    def __len__(self) -> int:
        return 0 if self.pos is None else self.pos.shape[0]


class KVCache:
    """One `LayerCache` per block plus the next absolute position to assign."""

    def __init__(self, n_layer: int) -> None:
        self.layers = [LayerCache() for _ in range(n_layer)]
        self.next_pos = 0

    def __len__(self) -> int:
        return len(self.layers[0])

    def keep(self, index: torch.Tensor) -> None:
        for layer in self.layers:
            layer.keep(index)
