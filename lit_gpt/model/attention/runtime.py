"""How attention runs, as opposed to what it computes.

`Config` (and its `AttentionSpec`) define the function a model computes and are saved with it; the
backend and the eager chunk size only change speed and memory, so they live here, are never saved,
and a run can resume or a checkpoint be evaluated with other ones, or on another device.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from lit_gpt.model.attention.backends import AUTO, AUTO_ELSEWHERE, FUSED, AttentionSpec, Backend, Eager
from lit_gpt.model.config import ConfigError

BACKEND_CHOICES = ("auto", "eager", *FUSED)


@dataclass(frozen=True)
class AttentionRuntime:
    """Run-time attention settings, handed to `GPT(config, runtime)` or `GPT.set_attention_runtime`."""

    backend: str = "auto"
    """`auto | eager | sdpa | flex | flash | xformers`; auto never changes what is computed."""
    chunk_size: int = 0
    """Queries per chunk in the eager backend (bounds memory; recomputed in backward); 0 = automatic,
    score blocks of half the size of the queries at T = 2048."""

    def __post_init__(self) -> None:
        if self.backend not in BACKEND_CHOICES:
            raise ConfigError(f"attn_backend={self.backend!r} is not one of {', '.join(BACKEND_CHOICES)}")
        if self.chunk_size < 0:
            raise ConfigError(f"attn_chunk_size must be >= 0, got {self.chunk_size}")

    def select(
        self, spec: AttentionSpec, device: torch.device, dtype: torch.dtype, training: bool, aligned: bool
    ) -> Backend:
        """The backend for calls of one kind (layers cache it, so this runs once per kind).

        An explicit backend is honoured or refused with a `ConfigError`; `auto` takes the fastest one
        that computes exactly `spec` here (CUDA: flash > xformers > sdpa > flex; CPU: sdpa), eager otherwise.
        Kernels that mask by token index only serve `aligned` calls; on a KV-cache call an explicit
        one gives way to what `auto` picks there (the same softmax, masked by position).
        """
        eager = Eager(self.chunk_size)
        if self.backend == "auto":
            order = AUTO.get(device.type, AUTO_ELSEWHERE)
            usable = (FUSED[name] for name in order if aligned or not FUSED[name].index_masks)
            return next((b for b in usable if b.supports(spec, device, dtype, training) is None), eager)
        chosen = eager if self.backend == "eager" else FUSED[self.backend]
        reason = chosen.supports(spec, device, dtype, training)
        if reason:
            raise ConfigError(f"attn_backend={self.backend} cannot be used: {reason}; use attn_backend=auto or eager")
        if chosen.index_masks and not aligned:
            return replace(self, backend="auto").select(spec, device, dtype, training, aligned)
        return chosen
