"""Interchangeable kernels that compute one attention problem, and the rule that picks among them.

All backends consume the same `AttentionProblem` (queries, keys, values, absolute positions, extra key
slots, additive position bias) and the same `MaskSpec`, so they can only differ in speed. `eager`
computes every variant and is the reference; the fused kernels compute softmax attention only, and
`choose_backend` selects one only where it provably computes the configured variant -- it never falls
back to a different mask or weight function.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from lit_gpt.attention.masks import MaskSpec
from lit_gpt.attention.weights import attention_weights
from lit_gpt.config import Config, ConfigError

PositionBias = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class AttentionProblem:
    """One attention call. q: (B, H, Tq, D); k, v: (B, H, Tk, D) (already expanded for GQA).

    Slots are extra key columns every query sees, placed before the real keys: `slot_k`, `slot_v` of
    shape (H, S, D) and an additive score `slot_bias` (H, S). `position_bias(q_pos, k_pos)` returns an
    additive (H, Tq, Tk) score bias (ALiBi, T5 buckets). `aligned` says q_pos and k_pos are the same
    0..T-1 sequence (a plain forward pass), which lets fused kernels use their built-in causal mask.
    """

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    q_pos: torch.Tensor
    k_pos: torch.Tensor
    aligned: bool = False
    slot_k: Optional[torch.Tensor] = None
    slot_v: Optional[torch.Tensor] = None
    slot_bias: Optional[torch.Tensor] = None
    position_bias: Optional[PositionBias] = None

    @property
    def n_slots(self) -> int:
        return 0 if self.slot_k is None else self.slot_k.shape[-2]

    @property
    def scale(self) -> float:
        return 1.0 / math.sqrt(self.q.shape[-1])

    def full_keys(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values with the slots prepended: (B, H, S + Tk, D)."""
        if self.slot_k is None:
            return self.k, self.v
        batch = self.k.shape[0]
        slot_k = self.slot_k.to(self.k.dtype).expand(batch, -1, -1, -1)
        slot_v = self.slot_v.to(self.v.dtype).expand(batch, -1, -1, -1)
        return torch.cat((slot_k, self.k), dim=2), torch.cat((slot_v, self.v), dim=2)

    def score_bias(self, q_pos: torch.Tensor) -> Optional[torch.Tensor]:
        """Additive bias (H, Tq, S + Tk) in the query dtype for the given queries, or None when there is none.

        Slot columns get the slot bias (zero without one) and real keys the position bias, so the
        result always lines up with `full_keys()`.
        """
        bias = None if self.position_bias is None else self.position_bias(q_pos, self.k_pos).to(self.q.dtype)
        if self.slot_bias is None and (bias is None or not self.n_slots):
            return bias
        heads, n_queries = self.q.shape[1], q_pos.shape[0]
        if self.slot_bias is None:
            slot = self.q.new_zeros(heads, n_queries, self.n_slots)
        else:
            slot = self.slot_bias.to(self.q.dtype)[:, None, :].expand(heads, n_queries, -1)
        if bias is None:
            bias = self.q.new_zeros(heads, n_queries, self.k.shape[2])
        return torch.cat((slot, bias), dim=-1)

    def visible(self, mask: MaskSpec, q_pos: torch.Tensor) -> torch.Tensor:
        """(Tq, S + Tk) boolean visibility; slots are always visible."""
        seen = mask.matrix(q_pos, self.k_pos)
        if self.n_slots:
            always = torch.ones(q_pos.shape[0], self.n_slots, dtype=torch.bool, device=seen.device)
            seen = torch.cat((always, seen), dim=-1)
        return seen


@dataclass(frozen=True)
class AttentionSpec:
    """What a layer computes: weight function, normaliser and mask."""

    score_fn: str = "softmax"
    normalize: str = "sum"
    mask: MaskSpec = MaskSpec()
    chunk_size: int = 0

    @classmethod
    def from_config(cls, config: Config) -> "AttentionSpec":
        return cls(config.attn_score, config.attn_normalize,
                   MaskSpec(config.window_size, config.prefix_tokens, config.sink_tokens), config.attn_chunk_size)


# ----------------------------------------------------------------------------------------- eager
def auto_chunk_size(n_keys: int, head_size: int) -> int:
    """Queries per chunk so one (B, H, chunk, Tk) block is half the size of q at T = 2048.

    Backward recomputes a chunk and holds a few such blocks (scores, weights, their gradients) at
    once; at this size a non-softmax layer stays within ~1.5x of SDPA's memory (bench/attention.py).
    """
    return max(16, head_size * 1024 // max(n_keys, 1))


def _eager_chunk(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, q_pos: torch.Tensor,
                 problem: AttentionProblem, spec: AttentionSpec) -> tuple[torch.Tensor, torch.Tensor]:
    scores = (q @ keys.transpose(-1, -2)) * problem.scale
    bias = problem.score_bias(q_pos)
    if bias is not None:
        scores = scores + bias
    weights = attention_weights(scores, problem.visible(spec.mask, q_pos), spec.score_fn, spec.normalize)
    return weights @ values, weights


def eager(problem: AttentionProblem, spec: AttentionSpec, need_weights: bool = False):
    """Reference implementation of every variant, processed in query chunks.

    Only one (B, H, chunk, S + Tk) score block exists at a time; under autograd each chunk is
    recomputed in backward instead of stored, so memory stays close to a fused kernel's.
    Returns (y, weights or None); weights are (B, H, Tq, S + Tk), the values' actual coefficients.
    """
    keys, values = problem.full_keys()
    n_queries = problem.q.shape[2]
    chunk = spec.chunk_size or auto_chunk_size(keys.shape[2], problem.q.shape[-1])
    recompute = torch.is_grad_enabled() and not need_weights and n_queries > chunk
    outputs, maps = [], []
    for start in range(0, n_queries, chunk):
        q = problem.q[:, :, start:start + chunk]
        q_pos = problem.q_pos[start:start + chunk]
        if recompute:
            y = checkpoint(lambda q_, k_, v_, p_: _eager_chunk(q_, k_, v_, p_, problem, spec)[0],
                           q, keys, values, q_pos, use_reentrant=False)
        else:
            y, weights = _eager_chunk(q, keys, values, q_pos, problem, spec)
            if need_weights:
                maps.append(weights)
        outputs.append(y)
    y = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=2)
    return y, (torch.cat(maps, dim=2) if need_weights else None)


# ------------------------------------------------------------------------------------------ sdpa
def sdpa(problem: AttentionProblem, spec: AttentionSpec) -> torch.Tensor:
    """torch's fused softmax attention; masks, slots and position biases become an explicit mask.

    A learned slot logit (the only bias without a position bias) is instead folded into one extra
    query/key channel: a float mask that requires grad sends SDPA to its unfused math path, which
    stores the full (B, H, T, T) attention and took ~9x the memory at T = 2048.
    """
    if problem.aligned and spec.mask.is_plain_causal and not problem.n_slots and problem.position_bias is None:
        return F.scaled_dot_product_attention(problem.q, problem.k, problem.v, is_causal=True)
    q, (keys, values) = problem.q, problem.full_keys()
    visible = problem.visible(spec.mask, problem.q_pos)
    if problem.slot_bias is not None and problem.position_bias is None:
        q, keys, values = _slot_bias_channel(problem, keys, values)
        y = F.scaled_dot_product_attention(q, keys, values, attn_mask=visible, scale=problem.scale)
        return y[..., :-1]
    bias = problem.score_bias(problem.q_pos)
    mask = visible if bias is None else bias.masked_fill(~visible, float("-inf"))
    return F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)


def _slot_bias_channel(problem: AttentionProblem, keys: torch.Tensor, values: torch.Tensor):
    """q, keys, values with one more channel so that q'.k' * scale = q.k * scale + slot bias.

    Queries get a constant 1, slot keys bias / scale, real keys and all values 0 (the extra output
    channel is dropped; values are widened only because fused kernels want equal head sizes).
    """
    batch, heads, n_queries, _ = problem.q.shape
    slot = (problem.slot_bias.to(keys.dtype) / problem.scale)[None, :, :, None].expand(batch, -1, -1, -1)
    real = keys.new_zeros(batch, heads, problem.k.shape[2], 1)
    q = torch.cat((problem.q, problem.q.new_ones(batch, heads, n_queries, 1)), dim=-1)
    keys = torch.cat((keys, torch.cat((slot, real), dim=2)), dim=-1)
    values = torch.cat((values, values.new_zeros(batch, heads, values.shape[2], 1)), dim=-1)
    return q, keys, values


# ------------------------------------------------------------------------------------------ flex
def flex(problem: AttentionProblem, spec: AttentionSpec) -> torch.Tensor:
    """FlexAttention: the mask rule becomes a `mask_mod`, slot and position biases a `score_mod`."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    keys, values = problem.full_keys()
    n_slots, q_pos, k_pos = problem.n_slots, problem.q_pos, problem.k_pos

    def mask_mod(b, h, q_idx, kv_idx):
        real = spec.mask.visible(q_pos[q_idx], k_pos[(kv_idx - n_slots).clamp(min=0)])
        return (kv_idx < n_slots) | real

    block_mask = create_block_mask(mask_mod, None, None, q_pos.shape[0], keys.shape[2], device=problem.q.device)
    bias = problem.score_bias(q_pos)
    score_mod = None
    if bias is not None:
        def score_mod(score, b, h, q_idx, kv_idx):
            return score + bias[h, q_idx, kv_idx]
    return flex_attention(problem.q, keys, values, score_mod=score_mod, block_mask=block_mask)


# ---------------------------------------------------------------------------------- flash, xformers
def flash(problem: AttentionProblem, spec: AttentionSpec) -> torch.Tensor:
    """flash-attn (CUDA): causal or sliding-window softmax attention with its built-in masks."""
    from flash_attn import flash_attn_func

    window = (spec.mask.window - 1, 0) if spec.mask.window else (-1, -1)
    q, k, v = (t.transpose(1, 2) for t in (problem.q, problem.k, problem.v))
    return flash_attn_func(q, k, v, causal=True, window_size=window).transpose(1, 2)


def xformers(problem: AttentionProblem, spec: AttentionSpec) -> torch.Tensor:
    """xformers memory-efficient attention (CUDA) with its causal / local causal masks."""
    from xformers.ops import fmha

    if spec.mask.window:
        mask = fmha.attn_bias.LowerTriangularFromBottomRightLocalAttentionMask(spec.mask.window)
    else:
        mask = fmha.attn_bias.LowerTriangularMask()
    q, k, v = (t.transpose(1, 2) for t in (problem.q, problem.k, problem.v))
    return fmha.memory_efficient_attention(q, k, v, attn_bias=mask).transpose(1, 2)


# ------------------------------------------------------------------------------------- selection
FUSED = {"sdpa": sdpa, "flex": flex, "flash": flash, "xformers": xformers}


def installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def unsupported_reason(backend: str, config: Config) -> Optional[str]:
    """Why `backend` cannot compute the configured variant (independent of device), or None."""
    if backend == "eager":
        return None
    if not config.is_exp_normalized:
        return f"{backend} computes softmax attention only (this variant is {config.variant_summary()})"
    if backend in ("flash", "xformers"):
        if config.n_slots or config.pos_embedding in ("alibi", "relative") or config.prefix_tokens:
            return f"{backend} has no key slots, score biases or prefix masks"
        if config.window_size and config.sink_tokens:
            return f"{backend}'s window mask would hide the sink tokens"
    return None


def device_reason(backend: str, device_type: str, dtype: torch.dtype, training: bool) -> Optional[str]:
    """Why `backend` cannot run on this device/dtype right now, or None."""
    if backend in ("flash", "xformers"):
        package = "flash_attn" if backend == "flash" else "xformers"
        if device_type != "cuda":
            return f"{backend} needs a CUDA device"
        if not installed(package):
            return f"{package} is not installed"
        if dtype not in (torch.float16, torch.bfloat16):
            return f"{backend} needs fp16/bf16 inputs"
    if backend == "flex" and device_type == "cpu" and training:
        return "FlexAttention has no backward pass on CPU"
    return None


def choose_backend(config: Config, device_type: str, dtype: torch.dtype, training: bool, aligned: bool) -> str:
    """The backend a layer uses for one call.

    An explicit `attn_backend` is honoured or refused with an error; `auto` takes the fastest backend
    that computes exactly the configured variant here (CUDA: flash > xformers > sdpa; CPU: sdpa), and
    eager otherwise.
    """
    requested = config.attn_backend
    if requested != "auto":
        reason = unsupported_reason(requested, config) or device_reason(requested, device_type, dtype, training)
        if reason:
            raise ConfigError(f"attn_backend={requested} cannot be used: {reason}; use attn_backend=auto or eager")
        if requested in ("flash", "xformers") and not aligned:
            return "sdpa"  # cached decoding: same softmax, explicit position mask
        return requested
    order = ("flash", "xformers", "sdpa") if device_type == "cuda" else ("sdpa",)
    for backend in order:
        if backend in ("flash", "xformers") and not aligned:
            continue
        if unsupported_reason(backend, config) is None and device_reason(backend, device_type, dtype, training) is None:
            return backend
    return "eager"
