"""What a sink costs: the activation statistics that make a model hard to quantise, the perplexity after
8-bit round-to-nearest quantisation, and the perplexity of StreamingLLM caches with and without the
first tokens kept.

A first-token sink is paid for with a few huge activations on that token (Sun et al. 2024): they set a
per-tensor int8 scale so coarse that every other activation rounds to a handful of levels, and a cache
that evicts the token loses the key most heads rest on. These numbers say, per attention design, how
much of that a trained model carries.

- Kurtosis and max |activation|: over every position and channel of each block output on the probe
  windows (the embedding output is left out); the largest value over the blocks and its block are
  reported, blocks counted from 0 as everywhere in the project's outputs.
- W8A8: symmetric int8 round-to-nearest, weights per output channel and the input of every `nn.Linear`
  per tensor (the scale of each input is its own max |x| / 127); reported as probe perplexity relative
  to fp32.
- Streaming: `lit_gpt.measurement.streaming` on the probe texts packed back to back, with the run's input transforms
  on the first window, at a window of half the training length, keeping 0 or `n_sink` first tokens;
  positions numbered inside the cache as StreamingLLM does, so every distance stays within the training
  length (`full` is the exception: a reference past it).
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator, Optional

import torch
import torch.nn.functional as F
from torch import nn

from lit_gpt.data.transforms import InputTransforms
from lit_gpt.measurement.analysis import record_outputs
from lit_gpt.measurement.evaluation import probe_loss_mask, train_args
from lit_gpt.measurement.streaming import StreamingError, position_rule, streaming_perplexities

INT8_LEVELS = 127
STREAMING_SINKS = 4


# ---------------------------------------------------------------------------------- activations
def kurtosis(values: torch.Tensor) -> float:
    """Pearson kurtosis E[(x - mean)^4] / Var(x)^2 of all entries (3 for a Gaussian; large when a few
    entries dwarf the rest); 0 for a constant tensor."""
    x = values.double().flatten()
    centred = x - x.mean()
    variance = centred.pow(2).mean()
    return float(centred.pow(4).mean() / variance.pow(2)) if variance > 0 else 0.0


def largest(per_block: list[float]) -> dict:
    """{"value": the largest entry, "layer": its block, counted from 0}."""
    index = max(range(len(per_block)), key=per_block.__getitem__)
    return {"value": per_block[index], "layer": index}


@torch.no_grad()
def block_output_statistics(model, tokens: torch.Tensor, batch_size: int = 20) -> dict:
    """Kurtosis and max |activation| of each block output over the probe windows (N, T), and their peaks."""
    outputs: dict[int, list[torch.Tensor]] = {i: [] for i in range(len(model.blocks))}
    with record_outputs({str(i): block for i, block in enumerate(model.blocks)}) as store:
        for start in range(0, tokens.shape[0], batch_size):
            model(tokens[start : start + batch_size])
            for i in outputs:
                outputs[i].append(store[str(i)].float())
    hidden = [torch.cat(outputs[i]) for i in outputs]
    kurtoses = [kurtosis(h) for h in hidden]
    max_abs = [float(h.abs().max()) for h in hidden]
    return {
        "kurtosis": largest(kurtoses),
        "max_abs": largest(max_abs),
        "layer_kurtosis": kurtoses,
        "layer_max_abs": max_abs,
    }


# ------------------------------------------------------------------------------------------ W8A8
def fake_quantize(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Symmetric int8 round-to-nearest with `scale` per level, back in x's dtype."""
    return (x / scale).round().clamp(-INT8_LEVELS, INT8_LEVELS) * scale


def int8_scale(magnitude: torch.Tensor) -> torch.Tensor:
    """The step that maps `magnitude` to the last int8 level; an all-zero tensor keeps step 1 (it stays 0)."""
    return torch.where(magnitude > 0, magnitude / INT8_LEVELS, torch.ones_like(magnitude))


def quantize_weight(weight: torch.Tensor) -> torch.Tensor:
    """Per output channel (row): each row's own max |w| / 127."""
    return fake_quantize(weight, int8_scale(weight.abs().amax(dim=1, keepdim=True)))


def quantize_activation(x: torch.Tensor) -> torch.Tensor:
    """Per tensor: one step, max |x| / 127, for the whole input."""
    return fake_quantize(x, int8_scale(x.abs().amax()))


@contextmanager
def w8a8(model: nn.Module) -> Iterator[nn.Module]:
    """Inside the context every `nn.Linear` of `model` computes with int8-rounded weights and inputs; the
    fp32 weights are back afterwards."""
    linears = [module for module in model.modules() if isinstance(module, nn.Linear)]
    originals = [linear.weight.detach().clone() for linear in linears]
    handles = [
        linear.register_forward_pre_hook(lambda m, args: (quantize_activation(args[0]), *args[1:]))
        for linear in linears
    ]
    try:
        with torch.no_grad():
            for linear in linears:
                linear.weight.copy_(quantize_weight(linear.weight))
        yield model
    finally:
        for handle in handles:
            handle.remove()
        with torch.no_grad():
            for linear, weight in zip(linears, originals):
                linear.weight.copy_(weight)


@torch.no_grad()
def probe_nll(model, tokens: torch.Tensor, loss_mask: Optional[torch.Tensor] = None, batch_size: int = 20) -> float:
    """Mean next-token cross-entropy on the probe windows (N, T), counting the predictions `loss_mask`
    (T - 1,) marks, as the probe loss of `lit_gpt.measurement.analysis` does."""
    total, count = 0.0, 0
    vocab = model.config.vocab_size
    for start in range(0, tokens.shape[0], batch_size):
        idx = tokens[start : start + batch_size]
        logits = model(idx)[:, :-1, :vocab].float()
        losses = F.cross_entropy(logits.flatten(0, 1), idx[:, 1:].flatten(), reduction="none").view(idx.shape[0], -1)
        mask = torch.ones_like(losses, dtype=torch.bool) if loss_mask is None else loss_mask.expand_as(losses)
        total += float(losses[mask].sum())
        count += int(mask.sum())
    return total / max(count, 1)


def w8a8_perplexity(
    model, tokens: torch.Tensor, loss_mask: Optional[torch.Tensor] = None, batch_size: int = 20
) -> dict:
    """Probe perplexity in fp32 and under W8A8, and their ratio (1 = quantisation costs nothing)."""
    fp32 = probe_nll(model, tokens, loss_mask, batch_size)
    with w8a8(model):
        quantized = probe_nll(model, tokens, loss_mask, batch_size)
    return {
        "perplexity_fp32": math.exp(fp32),
        "perplexity_w8a8": math.exp(quantized),
        "ratio": math.exp(quantized - fp32),
    }


# ------------------------------------------------------------------------------------ streaming
def streaming_window(block_size: int) -> int:
    """The window of the streaming columns: half the training length, below it as the column asks."""
    return max(block_size // 2, 1)


def streaming_costs(model, text: torch.Tensor, n_sink: int = STREAMING_SINKS) -> dict:
    """Perplexity of `text` (N,) with full attention and with a window cache keeping 0 or `n_sink` first tokens."""
    window = streaming_window(model.config.block_size)
    settings = {
        "window": window,
        "n_tokens": int(text.numel()),
        "n_sink": n_sink,
        "positions": position_rule(model.config),
    }
    try:
        perplexity = streaming_perplexities(model, text, window, n_sink)["perplexity"]
    except StreamingError as error:  # a model that cannot stream this far: the other columns still count
        blank = dict.fromkeys(("perplexity_full", "perplexity_keep_0", f"perplexity_keep_{n_sink}"))
        return {**settings, **blank, "unavailable": str(error)}
    return {
        **settings,
        "perplexity_full": perplexity["full"],
        "perplexity_keep_0": perplexity["window"],
        f"perplexity_keep_{n_sink}": perplexity["sink"],
    }


def sink_costs(
    model, probe: torch.Tensor, text: torch.Tensor, loss_mask: Optional[torch.Tensor] = None, batch_size: int = 20
) -> dict:
    """Every cost column for one model: block-output statistics and W8A8 on the probe windows (N, T),
    streaming on the long `text` (N,)."""
    model.eval()
    return {
        **block_output_statistics(model, probe, batch_size),
        "w8a8": w8a8_perplexity(model, probe, loss_mask, batch_size),
        "streaming": streaming_costs(model, text),
    }


def format_costs(costs: dict) -> str:
    """The cost columns as two lines of text for the evaluation's printout."""
    streaming, w8a8_result = costs["streaming"], costs["w8a8"]
    keep = streaming["n_sink"]
    head = (
        f"streaming ({streaming['n_tokens']} tokens, window {streaming['window']}, {streaming['positions']} positions)"
    )
    if streaming.get("unavailable"):
        stream_line = f"{head}: not measured, {streaming['unavailable']}"
    else:
        stream_line = (
            f"{head}: perplexity full {streaming['perplexity_full']:.3f}, keep 0 first tokens "
            f"{streaming['perplexity_keep_0']:.3f}, keep {keep} {streaming[f'perplexity_keep_{keep}']:.3f}"
        )
    return (
        f"block outputs: kurtosis {costs['kurtosis']['value']:.1f} (block {costs['kurtosis']['layer']}), "
        f"max |activation| {costs['max_abs']['value']:.1f} (block {costs['max_abs']['layer']}); "
        f"W8A8 perplexity {w8a8_result['perplexity_w8a8']:.3f} = {w8a8_result['ratio']:.3f} x fp32\n"
        f"{stream_line}"
    )


def streaming_length(block_size: int) -> int:
    """Tokens of text the streaming columns score: four training lengths, so most of it is past the window."""
    return 4 * block_size


def checkpoint_costs(model, ckpt: dict, probe: torch.Tensor, text: torch.Tensor, batch_size: int = 20) -> dict:
    """`sink_costs` of a loaded checkpoint on raw probe windows (N, T) and raw long text (N,): the run's input
    transforms go on the windows and on the text's first window, and the probe loss counts what training
    counted, as in the sink evaluation."""
    train = train_args(ckpt)
    transforms = InputTransforms.of_run(train)
    vocab = model.config.vocab_size
    windows = transforms.apply(probe, vocab)
    return sink_costs(
        model,
        windows,
        transforms.apply(text[None], vocab)[0],
        probe_loss_mask(model.config, train, windows.shape[1]),
        batch_size,
    )


__all__ = [
    "block_output_statistics",
    "checkpoint_costs",
    "fake_quantize",
    "format_costs",
    "kurtosis",
    "probe_nll",
    "quantize_activation",
    "quantize_weight",
    "sink_costs",
    "streaming_costs",
    "streaming_length",
    "streaming_window",
    "w8a8",
    "w8a8_perplexity",
]
