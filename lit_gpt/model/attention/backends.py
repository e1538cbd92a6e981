"""Interchangeable kernels that compute one attention problem, and what each of them can compute.

All backends consume the same `AttentionProblem` (queries, keys, values, absolute positions, extra key
slots, additive position bias) and the same `AttentionSpec`, so they can only differ in speed. `Eager`
computes every spec and is the reference. A fused kernel declares what it computes as an allow-list
over the spec (`Fused.allowed`); every field it does not list must keep its default (plain causal
softmax), so a field added to `AttentionSpec` later is refused by every fused kernel until someone
teaches it -- never computed with the wrong mask or weight function. `AttentionRuntime.select` (in
`runtime`) picks among them.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass, fields
from functools import cached_property
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from lit_gpt.model.attention.masks import MaskSpec
from lit_gpt.model.attention.weights import LOG_WEIGHT_FUNCTIONS, attention_weights, row_divisor
from lit_gpt.model.config import Config

PositionBias = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# Head sizes fused CUDA attention kernels accept are multiples of this.
HEAD_MULTIPLE = 8


@dataclass
class AttentionProblem:
    """One attention call. q: (B, H, Tq, D); k, v: (B, H, Tk, D) (already expanded for GQA).

    Slots are extra key columns every query sees, placed before the real keys: `slot_k`, `slot_v` of
    shape (H, S, D) and an additive score `slot_bias` (H, S). `position_bias(q_pos, k_pos)` returns an
    additive (H, Tq, Tk) score bias (ALiBi, T5 buckets). `aligned` says q_pos and k_pos are the same
    0..T-1 sequence (a plain forward pass), which lets fused kernels use their built-in causal mask.
    `key_mask` (B, H, Tq, Tk) boolean, when given, further restricts which real keys each query sees
    (studies of sparse attention); slots stay visible. Only a spec with `key_mask=True` computes it.
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
    key_mask: Optional[torch.Tensor] = None

    @property
    def n_slots(self) -> int:
        return 0 if self.slot_k is None else self.slot_k.shape[-2]

    @property
    def scale(self) -> float:
        return 1.0 / math.sqrt(self.q.shape[-1])

    def full_keys(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values with the slots prepended: (B, H, S + Tk, D)."""
        if self.slot_k is None or self.slot_v is None:
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

    def allowed_keys(self, rows: slice) -> Optional[torch.Tensor]:
        """`key_mask` of the queries in `rows` with the slot columns (always allowed) prepended, or None."""
        if self.key_mask is None:
            return None
        allowed = self.key_mask[:, :, rows]
        if self.n_slots:
            always = allowed.new_ones(*allowed.shape[:-1], self.n_slots)
            allowed = torch.cat((always, allowed), dim=-1)
        return allowed


@dataclass(frozen=True)
class AttentionSpec:
    """What a layer's attention kernel computes: the fields of `Config` that change its result.

    The defaults are plain causal softmax attention. The output gate and a v* output bias act on the
    kernel's output, RoPE and absolute positions on its inputs, so they are not here.
    """

    score: str = "softmax"
    """Weight function (`attn_score`)."""
    kernel: str = "none"
    """Feature map on q and k before scoring (`attn_kernel`)."""
    normalize: str = "sum"
    """Row normaliser (`attn_normalize`)."""
    mask: MaskSpec = MaskSpec()
    """Sliding window, prefix and sink tokens."""
    n_slots: int = 0
    """Extra key columns every query sees (k*, off-by-one zero, sink logit)."""
    slot_logit: bool = False
    """One slot scores a learned logit instead of q.k (`sink_logit`)."""
    position_bias: str = "none"
    """Additive score bias from positions: `none`, `alibi` or `relative` (T5 buckets)."""
    key_mask: bool = False
    """Queries see only the real keys the problem's `key_mask` allows (set by the layer, never by a config)."""

    @classmethod
    def from_config(cls, config: Config) -> "AttentionSpec":
        return cls(
            config.attn_score,
            config.attn_kernel,
            config.attn_normalize,
            MaskSpec(config.window_size, config.prefix_tokens, config.sink_tokens),
            config.n_slots,
            config.sink_logit,
            config.pos_embedding if config.pos_embedding in ("alibi", "relative") else "none",
        )


class Backend:
    """A kernel for `AttentionProblem`s: `backend(problem, spec)` -> y (B, H, Tq, D)."""

    name = ""
    index_masks = False
    """The kernel masks by token index, so it computes a spec only when queries and keys are the same
    0..T-1 positions (a forward pass without KV cache)."""

    def supports(self, spec: AttentionSpec, device: torch.device, dtype: torch.dtype, training: bool) -> Optional[str]:
        """None when this kernel computes exactly `spec` here, otherwise the reason it cannot."""
        raise NotImplementedError

    def __call__(self, problem: AttentionProblem, spec: AttentionSpec) -> torch.Tensor:
        raise NotImplementedError


# ----------------------------------------------------------------------------------------- eager
def auto_chunk_size(n_keys: int, head_size: int) -> int:
    """Queries per chunk so one (B, H, chunk, Tk) block is half the size of q at T = 2048.

    Backward recomputes a chunk and holds a few such blocks (scores, weights, their gradients) at
    once; at this size a non-softmax layer stays within ~1.5x of SDPA's memory (bench/attention.py).
    """
    return max(16, head_size * 1024 // max(n_keys, 1))


def _eager_chunk(
    q: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    q_pos: torch.Tensor,
    allowed: Optional[torch.Tensor],
    problem: AttentionProblem,
    spec: AttentionSpec,
    need_weights: bool = False,
) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    # Every step avoids a pass over the (Tq, S + Tk) block where a smaller tensor can take it: the scale
    # goes on q, the row normaliser on the output.
    scores = (q * problem.scale) @ keys.transpose(-1, -2)
    visible = problem.visible(spec.mask, q_pos)
    if allowed is not None:
        visible = visible & allowed
    weights = attention_weights(scores, visible, spec.score, problem.score_bias(q_pos))
    divisor = row_divisor(weights, spec.score, spec.normalize)
    y = weights @ values if divisor is None else (weights @ values) / divisor
    if not need_weights:
        return y, None
    return y, (weights if divisor is None else weights / divisor)


@dataclass(frozen=True)
class Eager(Backend):
    """Reference implementation of every spec, processed in query chunks of `chunk_size` (0 = automatic).

    Only one (B, H, chunk, S + Tk) score block exists at a time; under autograd each chunk is
    recomputed in backward instead of stored, so memory stays close to a fused kernel's.
    """

    chunk_size: int = 0
    name = "eager"

    def supports(self, spec: AttentionSpec, device: torch.device, dtype: torch.dtype, training: bool) -> Optional[str]:
        return None

    def __call__(self, problem: AttentionProblem, spec: AttentionSpec) -> torch.Tensor:
        return self.attend(problem, spec)[0]

    def attend(self, problem: AttentionProblem, spec: AttentionSpec, need_weights: bool = False):
        """(y, weights or None); weights are (B, H, Tq, S + Tk), the values' actual coefficients."""
        if spec.key_mask != (problem.key_mask is not None):
            state = "lacks" if spec.key_mask else "has"
            raise ValueError(f"spec.key_mask={spec.key_mask} but the problem {state} a key_mask")
        keys, values = problem.full_keys()
        n_queries = problem.q.shape[2]
        chunk = self.chunk_size or auto_chunk_size(keys.shape[2], problem.q.shape[-1])
        recompute = torch.is_grad_enabled() and not need_weights and n_queries > chunk
        outputs: list[torch.Tensor] = []
        maps: list[torch.Tensor] = []
        for start in range(0, n_queries, chunk):
            q = problem.q[:, :, start : start + chunk]
            q_pos = problem.q_pos[start : start + chunk]
            allowed = problem.allowed_keys(slice(start, start + chunk))
            if recompute:
                y = checkpoint(
                    lambda q_, k_, v_, p_, a_: _eager_chunk(q_, k_, v_, p_, a_, problem, spec)[0],
                    q,
                    keys,
                    values,
                    q_pos,
                    allowed,
                    use_reentrant=False,
                )
            else:
                y, weights = _eager_chunk(q, keys, values, q_pos, allowed, problem, spec, need_weights)
                if weights is not None:
                    maps.append(weights)
            outputs.append(y)
        y = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=2)
        return y, (torch.cat(maps, dim=2) if need_weights else None)


# ------------------------------------------------------------------------------------------ fused
def _any(value: Any) -> bool:
    return True


class Fused(Backend):
    """A fused softmax kernel; what it computes beyond plain causal softmax is listed in `allowed`."""

    computes = "plain causal softmax attention"
    """What the kernel computes, for the reason it gives when it cannot compute a spec."""
    allowed: dict[str, Callable[[Any], bool]] = {}
    """Spec field -> which of its values the kernel computes exactly; unlisted fields must keep their
    default."""

    def supports(self, spec: AttentionSpec, device: torch.device, dtype: torch.dtype, training: bool) -> Optional[str]:
        for field in fields(spec):
            value = getattr(spec, field.name)
            if value != field.default and not self.allowed.get(field.name, lambda _: False)(value):
                return f"{self.name} computes {self.computes}, not {field.name}={value!r}"
        return self.device_reason(device, dtype, training)

    def device_reason(self, device: torch.device, dtype: torch.dtype, training: bool) -> Optional[str]:
        """Why the kernel cannot run on this device/dtype/grad mode, or None."""
        return None


class SDPA(Fused):
    """torch's fused softmax attention; masks, slots and position biases become an explicit mask.

    A learned slot logit (the only bias without a position bias) is instead folded into one extra
    query/key channel: a float mask that requires grad sends SDPA to its unfused math path, which
    stores the full (B, H, T, T) attention and took ~9x the memory at T = 2048.
    """

    name = "sdpa"
    computes = "softmax attention with any mask, key slots and score bias"
    allowed = {"mask": _any, "n_slots": _any, "slot_logit": _any, "position_bias": _any}

    def __call__(self, problem: AttentionProblem, spec: AttentionSpec) -> torch.Tensor:
        if problem.aligned and spec.mask.is_plain_causal and not problem.n_slots and problem.position_bias is None:
            return F.scaled_dot_product_attention(problem.q, problem.k, problem.v, is_causal=True)
        q, (keys, values) = problem.q, problem.full_keys()
        visible = problem.visible(spec.mask, problem.q_pos)
        if problem.slot_bias is not None and problem.position_bias is None:
            q, keys, values = _slot_bias_channel(problem, keys, values)
            y = F.scaled_dot_product_attention(q, keys, values, attn_mask=visible, scale=problem.scale)
            return y[..., : problem.v.shape[-1]]
        bias = problem.score_bias(problem.q_pos)
        mask = visible if bias is None else bias.masked_fill(~visible, float("-inf"))
        return F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)


def _slot_bias_channel(problem: AttentionProblem, keys: torch.Tensor, values: torch.Tensor):
    """q, keys, values with extra channels so that q'.k' * scale = q.k * scale + slot bias.

    Queries get a constant 1, slot keys bias / scale, real keys and all values 0 (the extra output
    channels are dropped). The head is padded with zeros up to a multiple of 8: fused CUDA kernels
    (flash, memory-efficient) take no other head size, and D + 1 (97 at the 60M preset) would send SDPA
    to its unfused math path. Zero channels add nothing to any dot product.
    """
    batch, heads, n_queries, size = problem.q.shape
    assert problem.slot_bias is not None  # this channel carries the slot bias
    width = -(-(size + 1) // HEAD_MULTIPLE) * HEAD_MULTIPLE
    slot = (problem.slot_bias.to(keys.dtype) / problem.scale)[None, :, :, None].expand(batch, -1, -1, -1)
    bias_channel = torch.cat((slot, keys.new_zeros(batch, heads, problem.k.shape[2], 1)), dim=2)
    q = torch.cat((problem.q, problem.q.new_ones(batch, heads, n_queries, 1)), dim=-1)
    keys = torch.cat((keys, bias_channel), dim=-1)
    return tuple(F.pad(x, (0, width - x.shape[-1])) for x in (q, keys, values))


class Flex(Fused):
    """FlexAttention: the mask rule becomes a `mask_mod`, slot and position biases a `score_mod`.

    It also computes sigmoid and elu+1 attention exactly: weights w(s) divided by their sum are
    softmax(log w(s)), so `score_mod` returns log w(s); without normalisation the output is that
    result times sum w(s) = exp(logsumexp), which FlexAttention returns alongside. On CUDA the kernel is
    compiled once (uncompiled FlexAttention is a slow reference path).
    """

    name = "flex"
    computes = "softmax, sigmoid or elu+1 attention with any mask, key slots and score bias"
    allowed = {
        **SDPA.allowed,
        "score": lambda score: score in ("softmax", *LOG_WEIGHT_FUNCTIONS),
        "normalize": lambda normalize: normalize in ("sum", "none"),
    }

    @cached_property
    def compiled(self) -> Callable:
        from torch.nn.attention.flex_attention import flex_attention

        return torch.compile(flex_attention)

    def device_reason(self, device: torch.device, dtype: torch.dtype, training: bool) -> Optional[str]:
        if device.type == "cpu" and training:
            return "FlexAttention has no backward pass on CPU"
        return None

    def __call__(self, problem: AttentionProblem, spec: AttentionSpec) -> torch.Tensor:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        keys, values = problem.full_keys()
        n_slots, q_pos, k_pos = problem.n_slots, problem.q_pos, problem.k_pos

        def mask_mod(b, h, q_idx, kv_idx):
            real = spec.mask.visible(q_pos[q_idx], k_pos[(kv_idx - n_slots).clamp(min=0)])
            return (kv_idx < n_slots) | real

        block_mask = create_block_mask(mask_mod, None, None, q_pos.shape[0], keys.shape[2], device=problem.q.device)
        bias = problem.score_bias(q_pos)
        log_weight = LOG_WEIGHT_FUNCTIONS.get(spec.score)

        def score_mod(score, b, h, q_idx, kv_idx):
            if bias is not None:
                score = score + bias[h, q_idx, kv_idx]
            return log_weight(score) if log_weight is not None else score

        attend: Any = self.compiled if problem.q.device.type == "cuda" else flex_attention
        modified = score_mod if bias is not None or log_weight is not None else None
        if spec.normalize == "sum":
            return attend(problem.q, keys, values, score_mod=modified, block_mask=block_mask)
        y, lse = attend(problem.q, keys, values, score_mod=modified, block_mask=block_mask, return_lse=True)
        return y * lse.exp().unsqueeze(-1).to(y.dtype)


# ---------------------------------------------------------------------------------- flash, xformers
class CudaKernel(Fused):
    """A CUDA-only package's causal / sliding-window kernel, imported only when it runs."""

    package = ""
    index_masks = True
    computes = "causal or sliding-window softmax attention"
    # A window hides sink tokens from later queries, which the spec's mask keeps visible.
    allowed = {"mask": lambda mask: mask.is_plain_causal or mask == MaskSpec(window=mask.window)}

    @cached_property
    def installed(self) -> bool:
        """Probed once, on the first selection that gets this far, never in a forward pass."""
        return importlib.util.find_spec(self.package) is not None

    def device_reason(self, device: torch.device, dtype: torch.dtype, training: bool) -> Optional[str]:
        if device.type != "cuda":
            return f"{self.name} needs a CUDA device"
        if not self.installed:
            return f"{self.package} is not installed"
        if dtype not in (torch.float16, torch.bfloat16):
            return f"{self.name} needs fp16/bf16 inputs"
        return None


class Flash(CudaKernel):
    """flash-attn with its built-in causal / sliding-window masks."""

    name = "flash"
    package = "flash_attn"

    def __call__(self, problem: AttentionProblem, spec: AttentionSpec) -> torch.Tensor:
        from flash_attn import flash_attn_func

        window = (spec.mask.window - 1, 0) if spec.mask.window else (-1, -1)
        q, k, v = (t.transpose(1, 2) for t in (problem.q, problem.k, problem.v))
        return flash_attn_func(q, k, v, causal=True, window_size=window).transpose(1, 2)


class XFormers(CudaKernel):
    """xformers memory-efficient attention with its causal / local causal masks."""

    name = "xformers"
    package = "xformers"

    def __call__(self, problem: AttentionProblem, spec: AttentionSpec) -> torch.Tensor:
        from xformers.ops import fmha

        if spec.mask.window:
            mask = fmha.attn_bias.LowerTriangularFromBottomRightLocalAttentionMask(spec.mask.window)
        else:
            mask = fmha.attn_bias.LowerTriangularMask()
        q, k, v = (t.transpose(1, 2) for t in (problem.q, problem.k, problem.v))
        return fmha.memory_efficient_attention(q, k, v, attn_bias=mask).transpose(1, 2)


FUSED: dict[str, Fused] = {backend.name: backend for backend in (SDPA(), Flex(), Flash(), XFormers())}
# What `auto` tries per device type, fastest first. On CUDA FlexAttention comes last, for the sigmoid
# and elu+1 variants no other fused kernel computes; elsewhere it runs only on request (on CPU it has no
# backward and is slow uncompiled).
AUTO = {"cuda": ("flash", "xformers", "sdpa", "flex")}
AUTO_ELSEWHERE = ("sdpa",)
