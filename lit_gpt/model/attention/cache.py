"""Key/value cache for incremental decoding and streaming evaluation.

Two position rules:
- absolute (the default, for generation): keys are stored after RoPE and the kernel feature map, with
  their absolute positions, so attention over the cache masks and encodes positions exactly like a full
  forward pass -- even after middle entries were dropped.
- in-cache (`positions_in_cache=True`, StreamingLLM's rule, Xiao et al. 2023 section 3.2): positions are
  slots in the cache. After an eviction the kept entries are renumbered 0..n-1 and the next token gets
  position n, so no query-key distance exceeds the cache's size and a model trained on short windows
  never sees a distance it was not trained on. Keys are stored before RoPE and the feature map (the
  attention layer applies them to every cached key at each call), because a rotated key cannot be moved
  to another position once a feature map has been applied after the rotation.
"""

from __future__ import annotations

from typing import Optional

import torch


class LayerCache:
    """Cached keys/values (B, G, S, D) and positions (S,) of one layer."""

    def __init__(self, positions_in_cache: bool = False) -> None:
        self.positions_in_cache = positions_in_cache
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
        if self.positions_in_cache:
            self.pos = torch.arange(len(index), device=self.pos.device)

    def __len__(self) -> int:
        return 0 if self.pos is None else self.pos.shape[0]


class KVCache:
    """One `LayerCache` per block plus the next position to assign (see the module's position rules)."""

    def __init__(self, n_layer: int, positions_in_cache: bool = False) -> None:
        self.positions_in_cache = positions_in_cache
        self.layers = [LayerCache(positions_in_cache) for _ in range(n_layer)]
        self.next_pos = 0

    def __len__(self) -> int:
        return len(self.layers[0])

    def keep(self, index: torch.Tensor) -> None:
        for layer in self.layers:
            layer.keep(index)
        if self.positions_in_cache:
            self.next_pos = len(index)
