"""Probe-set analysis: sink rates, probe loss, per-position L2 norms and massive-activation statistics.

The statistics are computed from a `ProbeOutputs` per batch, so the same code serves our `GPT` (see
`gpt_probe_forward`) and Hugging Face causal LMs (see `lit_gpt.hf.probe.hf_probe_forward`).

- Norms per position: ||h_t||_2 of the hidden states (index 0 = embedding output incl. position
  encodings, index l = output of block l), of the keys and of the values (mean over key/value heads),
  averaged over sequences. Keys are taken before RoPE, which is a rotation and keeps norms. A model
  whose keys and values cannot be read gives None for their norms.
- Massive activations (Sun et al. 2024): for each hidden state, the three largest |activation|s over
  all positions and channels of a sequence and the median |activation|, averaged over sequences.

Positions include learned sink tokens (they come first; `n_sink_tokens` in the result says how many),
since that is where a sink variant's large norms live.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import torch
import torch.nn.functional as F

from lit_gpt.measurement.loss import ignored_predictions, prediction_mask
from lit_gpt.measurement.metrics import SinkAccumulator
from lit_gpt.measurement.probe_defaults import SINK_EPS, SINK_K
from lit_gpt.measurement.probe_result import ProbeResult


@dataclass
class ProbeOutputs:
    """One forward pass over a batch (B, T) of probe tokens.

    logits (B, T, V); maps: per layer (B, H, T, C) in the `lit_gpt.measurement.metrics` layout; hidden: L + 1
    tensors (B, S + T, C) (embedding output, then each block); keys, values: per layer (B, G, S + T, D),
    or None for a model whose keys and values cannot be read.
    """

    logits: torch.Tensor
    maps: list[torch.Tensor]
    hidden: list[torch.Tensor]
    keys: Optional[list[torch.Tensor]]
    values: Optional[list[torch.Tensor]]


ProbeForward = Callable[[torch.Tensor], ProbeOutputs]


def _first(output):
    return output[0] if isinstance(output, tuple) else output


@contextmanager
def record_outputs(modules: dict[str, torch.nn.Module]) -> Iterator[dict[str, torch.Tensor]]:
    """Forward hooks that store each named module's (first) output while the context is open."""
    store: dict[str, torch.Tensor] = {}
    handles = [
        module.register_forward_hook(lambda m, args, out, name=name: store.__setitem__(name, _first(out)))
        for name, module in modules.items()
    ]
    try:
        yield store
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def record_inputs(modules: dict[str, torch.nn.Module]) -> Iterator[dict[str, torch.Tensor]]:
    """Forward pre-hooks that store each named module's first positional input."""
    store: dict[str, torch.Tensor] = {}
    handles = [
        module.register_forward_pre_hook(lambda m, args, name=name: store.__setitem__(name, args[0]))
        for name, module in modules.items()
    ]
    try:
        yield store
    finally:
        for handle in handles:
            handle.remove()


def gpt_probe_forward(model) -> ProbeForward:
    """A `ProbeForward` for `lit_gpt.model.gpt.GPT`: attention maps plus hooked hidden states, keys, values."""
    cfg = model.config
    blocks = {f"block{i}": block for i, block in enumerate(model.blocks)}
    qkvs = {f"qkv{i}": block.attn.qkv for i, block in enumerate(model.blocks)}

    def forward(idx: torch.Tensor) -> ProbeOutputs:
        with record_inputs({"embedding": model.blocks[0]}) as inputs, record_outputs({**blocks, **qkvs}) as outs:
            logits, maps = model(idx, return_attention=True)
        keys, values = [], []
        for i in range(cfg.n_layer):
            qkv = outs[f"qkv{i}"]
            heads = qkv.view(*qkv.shape[:2], -1, cfg.head_size).transpose(1, 2)
            _, k, v = heads.split((cfg.n_head, cfg.n_query_groups, cfg.n_query_groups), dim=1)
            keys.append(k)
            values.append(v)
        hidden = [inputs["embedding"]] + [outs[f"block{i}"] for i in range(cfg.n_layer)]
        return ProbeOutputs(logits, maps, hidden, keys, values)

    return forward


def position_norms(x: torch.Tensor) -> torch.Tensor:
    """Sum over sequences (and heads) of the L2 norm at each position: (B, T, C) or (B, G, T, D) -> (T,)."""
    norms = x.float().norm(dim=-1)
    if norms.dim() == 3:
        norms = norms.mean(dim=1)
    return norms.sum(dim=0)


def activation_extremes(hidden: torch.Tensor, top: int = 3) -> torch.Tensor:
    """Per sequence: the `top` largest |activation|s and the median |activation| -> (B, top + 1)."""
    magnitudes = hidden.float().abs().flatten(1)
    largest = magnitudes.topk(top, dim=1).values
    return torch.cat((largest, magnitudes.median(dim=1).values[:, None]), dim=1)


class ProbeStatistics:
    """Accumulates everything the sink evaluation reports over any number of probe batches."""

    def __init__(self, n_slots: int = 0, n_sink_tokens: int = 0, eps: float = SINK_EPS, k: int = SINK_K) -> None:
        self.sinks = SinkAccumulator(n_slots, n_sink_tokens, eps, k)
        self.n_sink_tokens, self.eps = n_sink_tokens, eps
        self.loss_sum, self.loss_count, self.n_sequences = 0.0, 0, 0
        self.sums: dict[str, Optional[torch.Tensor]] = {
            "hidden": None,
            "keys": None,
            "values": None,
            "activations": None,
        }

    def _add(self, name: str, value: torch.Tensor) -> None:
        total = self.sums[name]
        self.sums[name] = value if total is None else total + value

    def _mean(self, name: str) -> Optional[list]:
        """The per-sequence mean of a sum, as lists; None for what no batch gave (keys of a HF model)."""
        total = self.sums[name]
        return None if total is None else (total / self.n_sequences).tolist()

    @torch.no_grad()
    def update(self, out: ProbeOutputs, idx: torch.Tensor, loss_mask: Optional[torch.Tensor] = None) -> None:
        """Add one batch; `loss_mask` (T - 1,) or (B, T - 1) marks next-token predictions that count."""
        self.sinks.update(out.maps)
        losses = F.cross_entropy(out.logits[:, :-1].flatten(0, 1).float(), idx[:, 1:].flatten(), reduction="none")
        targets = idx[:, 1:]
        mask = (
            torch.ones_like(targets, dtype=torch.bool)
            if loss_mask is None
            else loss_mask.to(idx.device).expand_as(targets)
        )
        self.loss_sum += float(losses[mask.flatten()].sum())
        self.loss_count += int(mask.sum())
        self.n_sequences += idx.shape[0]
        self._add("hidden", torch.stack([position_norms(h) for h in out.hidden]))
        for name, per_layer in (("keys", out.keys), ("values", out.values)):
            if per_layer is not None:
                self._add(name, torch.stack([position_norms(x) for x in per_layer]))
        self._add("activations", torch.stack([activation_extremes(h).sum(dim=0) for h in out.hidden]))

    def result(self) -> ProbeResult:
        """The summary (percentages for sink rates, per-layer lists, per-position lists)."""
        if not self.n_sequences:
            raise ValueError("no probe batches were evaluated")
        activations = self._mean("activations") or []
        return ProbeResult(
            eps=self.eps,
            n_sequences=self.n_sequences,
            n_sink_tokens=self.n_sink_tokens,
            sink_rates=self.sinks.rates(),
            layer_sink_rates=self.sinks.layer_rates(),
            layer_mean_alpha=self.sinks.mean_alphas(),
            loss=self.loss_sum / max(self.loss_count, 1),
            norms={name: self._mean(name) for name in ("hidden", "keys", "values")},
            massive_activations={
                stat: [row[i] for row in activations] for i, stat in enumerate(("top1", "top2", "top3", "median"))
            },
        )


def activation_ratios(stats: dict) -> list[Optional[float]]:
    """Top-1 / median |activation| of each hidden state (0 = embedding output, l = output of block l);
    None where the median is 0."""
    return [top / median if median > 0 else None for top, median in zip(stats["top1"], stats["median"])]


def peak_activation_ratio(stats: Optional[dict]) -> tuple[Optional[float], Optional[int]]:
    """(largest top-1 / median |activation| over the block outputs, its layer counted from 0); Nones without
    statistics or where every median is 0. The embedding output is left out, as massive-activations measures
    it: a random model's largest ratio is often its embedding's, which says nothing about a sink
    (`embedding_activation_ratio` gives it apart)."""
    if not stats:
        return None, None
    ratios = [(ratio, layer) for layer, ratio in enumerate(activation_ratios(stats)[1:]) if ratio is not None]
    return max(ratios, default=(None, None))


def embedding_activation_ratio(stats: Optional[dict]) -> Optional[float]:
    """Top-1 / median |activation| of the embedding output (None without statistics or with a zero median)."""
    return activation_ratios(stats)[0] if stats else None


@torch.no_grad()
def evaluate_probe(
    forward: ProbeForward,
    tokens: torch.Tensor,
    n_slots: int = 0,
    n_sink_tokens: int = 0,
    eps: float = SINK_EPS,
    k: int = SINK_K,
    batch_size: int = 20,
    loss_mask: Optional[torch.Tensor] = None,
) -> ProbeResult:
    """Run the probe (N, T) through `forward` in batches and return `ProbeStatistics.result()`."""
    stats = ProbeStatistics(n_slots, n_sink_tokens, eps, k)
    for start in range(0, tokens.shape[0], batch_size):
        idx = tokens[start : start + batch_size]
        stats.update(forward(idx), idx, loss_mask)
    return stats.result()


@torch.no_grad()
def evaluate_gpt(
    model,
    tokens: torch.Tensor,
    eps: float = SINK_EPS,
    k: int = SINK_K,
    batch_size: int = 20,
    loss_mask: Optional[torch.Tensor] = None,
) -> ProbeResult:
    """`evaluate_probe` for a `GPT`, with slots and sink tokens from its config; the loss mask defaults
    to the predictions `lit_gpt.measurement.loss.ignored_predictions` counts for the model alone."""
    cfg = model.config
    model.eval()
    if loss_mask is None:
        loss_mask = prediction_mask(ignored_predictions(cfg), tokens.shape[1])
    return evaluate_probe(gpt_probe_forward(model), tokens, cfg.n_slots, cfg.sink_tokens, eps, k, batch_size, loss_mask)


__all__ = [
    "ProbeOutputs",
    "ProbeStatistics",
    "activation_extremes",
    "evaluate_gpt",
    "evaluate_probe",
    "embedding_activation_ratio",
    "gpt_probe_forward",
    "peak_activation_ratio",
    "position_norms",
    "record_inputs",
    "record_outputs",
]
