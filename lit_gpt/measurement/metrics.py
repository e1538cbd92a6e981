"""Attention-sink metrics (Gu et al. 2024, "When Attention Sink Emerges in Language Models").

A map is one layer's attention, (B, H, T, C): rows are the T real-token queries, columns are
[key slots (n_slots)..., learned sink tokens (n_sink_tokens)..., real tokens (T)] -- the layout
`GPT(idx, return_attention=True)` returns. Every row is first normalised over all its columns as
|A| / (sum |A| + 1e-8), so variants whose weights do not sum to one (sigmoid or kernels without a
normaliser, signed linear kernels) are measured on the same footing as softmax.

For a real key k (1-based), alpha_k = (1 / (T - k + 1)) * sum_{i >= k} A_{i,k}: the mean weight k
gets from the queries at or after it. Slots and sink tokens are visible to every query, so their
alpha is the mean over all rows. Sink_k^eps is the percentage of (sequence, layer, head) triples with
alpha_k > eps; Sink* is the same for the key slots taken together, and the sink-token rate for the
learned sink tokens taken together.
"""

from __future__ import annotations

from typing import Sequence

import torch

from lit_gpt.measurement.probe_defaults import SINK_EPS, SINK_K

# The rates worth a look per layer: the first token, the key slots together, the learned sink tokens
# (the other Sink_k stay overall numbers). Plots, tables, the report page and the trainer's logged
# series all show these.
LAYER_SERIES = ("sink_1", "sink_star", "sink_token")


def hidden_state_label(index: int) -> str:
    """The name of hidden state `index` (0: the embedding output, i > 0: the output of layer i - 1). Layers
    count from 0 in every output of the project, as in Hugging Face's `hidden_states`, so the output of
    layer 3 is labelled "3" wherever per-layer sink rates of layer 3 appear."""
    return "embed" if index == 0 else str(index - 1)


NORM_EPS = 1e-8


def normalize_rows(attn: torch.Tensor) -> torch.Tensor:
    """|A| / (sum_j |A| + 1e-8) over the last dimension (a no-op, up to 1e-8, for softmax maps)."""
    attn = attn.abs().float()
    return attn / (attn.sum(dim=-1, keepdim=True) + NORM_EPS)


def split_columns(attn: torch.Tensor, n_slots: int, n_sink_tokens: int = 0):
    """(slots, sink_tokens, real) column blocks of a (..., T, C) map; `real` must be square."""
    real = attn[..., n_slots + n_sink_tokens :]
    if real.shape[-1] != real.shape[-2]:
        raise ValueError(
            f"map has {attn.shape[-1]} columns; with n_slots={n_slots} and "
            f"n_sink_tokens={n_sink_tokens} that leaves {real.shape[-1]} real keys "
            f"for {real.shape[-2]} queries"
        )
    return attn[..., :n_slots], attn[..., n_slots : n_slots + n_sink_tokens], real


def token_alphas(real: torch.Tensor, k: int) -> torch.Tensor:
    """alpha_1..alpha_k of a (..., T, T) real-token block -> (..., min(k, T))."""
    length = real.shape[-1]
    k = min(k, length)
    rows_at_or_after = torch.tril(torch.ones(length, k, dtype=real.dtype, device=real.device))
    received = (real[..., :, :k] * rows_at_or_after).sum(dim=-2)
    n_queries = torch.arange(length, length - k, -1, dtype=real.dtype, device=real.device)
    return received / n_queries


def alphas(attn: torch.Tensor, n_slots: int = 0, n_sink_tokens: int = 0, k: int = SINK_K) -> dict[str, torch.Tensor]:
    """Per (sequence, head) alphas of one layer's map (B, H, T, C), after row normalisation.

    Returns {"tokens": (B, H, min(k, T)), "slots": (B, H, n_slots), "sink_tokens": (B, H)} -- the
    sink-token entry (all sink tokens together) only when there are sink tokens.
    """
    slots, sink, real = split_columns(normalize_rows(attn), n_slots, n_sink_tokens)
    out = {"tokens": token_alphas(real, k), "slots": slots.mean(dim=-2)}
    if n_sink_tokens:
        out["sink_tokens"] = sink.sum(dim=-1).mean(dim=-1)
    return out


class SinkAccumulator:
    """Counts alpha > eps over (sequence, layer, head) across any number of probe batches.

    `update(maps)` takes the list of per-layer maps of one batch; `rates()` gives the overall
    percentages and `layer_rates()` the same per layer. `mean_alphas()` keeps the unthresholded
    averages, which show how close to eps a run is.
    """

    def __init__(self, n_slots: int = 0, n_sink_tokens: int = 0, eps: float = SINK_EPS, k: int = SINK_K) -> None:
        self.n_slots, self.n_sink_tokens, self.eps, self.k = n_slots, n_sink_tokens, eps, k
        self.hits: dict[str, list[float]] = {}
        self.alpha_sums: dict[str, list[float]] = {}
        self.counts: list[int] = []

    def _layer_alphas(self, attn: torch.Tensor) -> dict[str, torch.Tensor]:
        """name -> (B, H) alpha for every reported key."""
        parts = alphas(attn, self.n_slots, self.n_sink_tokens, self.k)
        out = {f"sink_{i + 1}": parts["tokens"][..., i] for i in range(parts["tokens"].shape[-1])}
        if self.n_slots:
            out["sink_star"] = parts["slots"].sum(dim=-1)
            if self.n_slots > 1:
                out.update({f"sink_star_{s + 1}": parts["slots"][..., s] for s in range(self.n_slots)})
        if self.n_sink_tokens:
            out["sink_token"] = parts["sink_tokens"]
        return out

    @torch.no_grad()
    def update(self, maps: Sequence[torch.Tensor]) -> None:
        if not self.counts:
            self.counts = [0] * len(maps)
        if len(maps) != len(self.counts):
            raise ValueError(f"got maps for {len(maps)} layers, expected {len(self.counts)}")
        for layer, attn in enumerate(maps):
            for name, alpha in self._layer_alphas(attn).items():
                self.hits.setdefault(name, [0.0] * len(maps))[layer] += float((alpha > self.eps).sum())
                self.alpha_sums.setdefault(name, [0.0] * len(maps))[layer] += float(alpha.sum())
            self.counts[layer] += attn.shape[0] * attn.shape[1]

    def _check(self) -> None:
        if not self.counts:
            raise ValueError("no attention maps were accumulated")

    def rates(self) -> dict[str, float]:
        """Percent of (sequence, layer, head) with alpha > eps, per reported key."""
        self._check()
        total = sum(self.counts)
        return {name: 100.0 * sum(hits) / total for name, hits in self.hits.items()}

    def layer_rates(self) -> dict[str, list[float]]:
        """Percent of (sequence, head) with alpha > eps, per layer."""
        self._check()
        return {name: [100.0 * h / c for h, c in zip(hits, self.counts)] for name, hits in self.hits.items()}

    def mean_alphas(self) -> dict[str, list[float]]:
        """Mean alpha per layer (over sequences and heads), per reported key."""
        self._check()
        return {name: [s / c for s, c in zip(sums, self.counts)] for name, sums in self.alpha_sums.items()}


def sink_rates(
    maps: Sequence[torch.Tensor], n_slots: int = 0, n_sink_tokens: int = 0, eps: float = SINK_EPS, k: int = SINK_K
) -> dict[str, float]:
    """Sink_1..Sink_k in percent, plus `sink_star` (with slots) and `sink_token` (with sink tokens).

    With several slots, `sink_star` treats them together and `sink_star_<s>` reports each one.
    """
    acc = SinkAccumulator(n_slots, n_sink_tokens, eps, k)
    acc.update(maps)
    return acc.rates()


def layer_sink_rates(
    maps: Sequence[torch.Tensor],
    n_slots: int = 0,
    n_sink_tokens: int = 0,
    eps: float = SINK_EPS,
    key: str = "sink_1",
    k: int = SINK_K,
) -> list[float]:
    """One metric (`sink_1`, `sink_star`, ...) per layer, in percent."""
    acc = SinkAccumulator(n_slots, n_sink_tokens, eps, k)
    acc.update(maps)
    return acc.layer_rates()[key]


__all__ = [
    "LAYER_SERIES",
    "hidden_state_label",
    "SinkAccumulator",
    "alphas",
    "layer_sink_rates",
    "normalize_rows",
    "sink_rates",
    "split_columns",
    "token_alphas",
]
