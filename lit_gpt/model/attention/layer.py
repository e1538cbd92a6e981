"""The attention layer: projections, RoPE, feature maps, key slots, backend dispatch, output gate."""

from __future__ import annotations

from dataclasses import replace
from typing import Callable, Optional

import torch
import torch.nn as nn

from lit_gpt.model.attention.backends import AttentionProblem, AttentionSpec, Backend, Eager, PositionBias
from lit_gpt.model.attention.cache import LayerCache
from lit_gpt.model.attention.runtime import AttentionRuntime
from lit_gpt.model.attention.weights import FeatureMap
from lit_gpt.model.config import Config
from lit_gpt.model.positions import RopeScaling, apply_rope, rope_cos_sin

KV_BIAS_STD = 0.02


class KeySlots(nn.Module):
    """Extra key columns every query can attend to, in a fixed order: [k*, off-by-one zero, sink logit].

    k*/v* are learned vectors added after RoPE (shared across heads, or per head); the off-by-one slot
    is a zero key with a zero value (so softmax gets a 1 in its denominator); the sink-logit slot has
    a learned per-head score and a zero value. A v* without k* is not a slot but an output bias.
    """

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.config = config
        rows = config.n_head if config.head_bias else 1
        self.k_star = nn.Parameter(torch.empty(rows, config.head_size)) if config.k_bias else None
        self.v_star = nn.Parameter(torch.empty(rows, config.head_size)) if config.v_bias else None
        self.logit = nn.Parameter(torch.empty(config.n_head)) if config.sink_logit else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for param in (self.k_star, self.v_star):
            if param is not None:
                nn.init.normal_(param, std=KV_BIAS_STD)
        if self.logit is not None:
            nn.init.zeros_(self.logit)

    def keys_values(self, feature_map: Optional[FeatureMap], like: torch.Tensor):
        """(slot_k, slot_v, slot_bias) of shapes (H, S, D), (H, S, D), (H, S) or None; Nones without slots.

        `like` gives device and dtype: an off-by-one-only layer owns no parameter to take them from.
        """
        cfg = self.config
        if not cfg.n_slots:
            return None, None, None
        zeros = like.new_zeros(cfg.n_head, 1, cfg.head_size)
        keys, values = [], []
        if self.k_star is not None:
            k_star = self.k_star.expand(cfg.n_head, -1)[:, None, :]
            keys.append(feature_map(k_star) if feature_map is not None else k_star)
            values.append(self.v_star.expand(cfg.n_head, -1)[:, None, :] if self.v_star is not None else zeros)
        for _ in range(int(cfg.softmax_off_by_one) + int(cfg.sink_logit)):
            keys.append(zeros)
            values.append(zeros)
        bias = None
        if self.logit is not None:
            bias = torch.cat((like.new_zeros(cfg.n_head, cfg.n_slots - 1), self.logit[:, None]), dim=1)
        return torch.cat(keys, dim=1), torch.cat(values, dim=1), bias

    def output_bias(self) -> Optional[torch.Tensor]:
        """v* added to each head's output when there is no k* to carry it: (H or 1, 1, D)."""
        if self.v_star is not None and self.k_star is None:
            return self.v_star[:, None, :]
        return None


class OutputGate(nn.Module):
    """sigmoid(x W_g) multiplying each head's output (headwise) or each of its channels (elementwise)."""

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.headwise = config.attn_gate == "headwise"
        width = config.n_head if self.headwise else config.n_head * config.head_size
        self.proj = nn.Linear(config.n_embd, width, bias=False)
        self.n_head, self.head_size = config.n_head, config.head_size

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x: block input (B, T, C); y: head outputs (B, T, H, D)."""
        gate = torch.sigmoid(self.proj(x))
        if self.headwise:
            return y * gate[..., None]
        return y * gate.view(*y.shape)


class CausalSelfAttention(nn.Module):
    """Multi-head (grouped-query) attention whose variant is fully described by the `Config`; the
    `AttentionRuntime` only decides how it runs."""

    key_selector: Optional[Callable[[AttentionProblem], Optional[torch.Tensor]]] = None
    """Set by studies of sparse attention (never saved): maps each call's problem to the `key_mask` its
    queries are restricted to, or None for no restriction; such calls run on a backend that computes it."""

    def __init__(self, config: Config, runtime: AttentionRuntime = AttentionRuntime()) -> None:
        super().__init__()
        self.config = config
        self.spec = AttentionSpec.from_config(config)
        self.set_runtime(runtime)
        heads = config.n_head + 2 * config.n_query_groups
        self.qkv = nn.Linear(config.n_embd, heads * config.head_size, bias=config.bias)
        self.proj = nn.Linear(config.n_head * config.head_size, config.n_embd, bias=config.bias)
        self.feature_map = (
            FeatureMap(config.attn_kernel, config.head_size, config.kernel_hidden)
            if config.attn_kernel != "none"
            else None
        )
        self.slots = KeySlots(config) if (config.n_slots or config.v_bias) else None
        self.gate = OutputGate(config) if config.attn_gate != "none" else None

    def set_runtime(self, runtime: AttentionRuntime) -> None:
        """Run with `runtime` from the next call on (backends are chosen again)."""
        self.runtime = runtime
        self.eager = Eager(runtime.chunk_size)  # attention maps always come from eager, the only one returning them
        self.backends: dict[tuple, Backend] = {}

    def backend(
        self,
        device: torch.device,
        dtype: torch.dtype,
        training: bool,
        aligned: bool,
        spec: Optional[AttentionSpec] = None,
    ) -> Backend:
        """The backend for calls of this kind (and `spec`, default the layer's), chosen once and then reused."""
        spec = spec or self.spec
        key = (spec, device, dtype, training, aligned)
        if key not in self.backends:
            self.backends[key] = self.runtime.select(spec, device, dtype, training, aligned)
        return self.backends[key]

    def place_keys(self, k: torch.Tensor, positions: torch.Tensor, rope_dtype: Optional[torch.dtype]) -> torch.Tensor:
        """RoPE at `positions` (tables in `rope_dtype`, as the model built the queries'; None: no RoPE) and the
        feature map on raw cached keys (an in-cache position rule renumbers them)."""
        cfg = self.config
        if rope_dtype is not None:
            scaling = RopeScaling.from_config(cfg)
            k = apply_rope(k, *rope_cos_sin(positions, cfg.head_size, cfg.rope_base, rope_dtype, scaling))
        return self.feature_map(k) if self.feature_map is not None else k

    def forward(
        self,
        x: torch.Tensor,
        positions: torch.Tensor,
        rope: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
        position_bias: Optional[PositionBias] = None,
        cache: Optional[LayerCache] = None,
        need_weights: bool = False,
    ):
        """x: (B, T, C), positions: (T,) absolute positions. Returns (y, weights or None)."""
        cfg = self.config
        B, T, _ = x.shape
        q, k, v = (
            self.qkv(x)
            .view(B, T, -1, cfg.head_size)
            .transpose(1, 2)
            .split((cfg.n_head, cfg.n_query_groups, cfg.n_query_groups), dim=1)
        )
        placed_later = cache is not None and cache.positions_in_cache
        if rope is not None:
            q = apply_rope(q, *rope)
            k = k if placed_later else apply_rope(k, *rope)
        if self.feature_map is not None:
            q = self.feature_map(q)
            k = k if placed_later else self.feature_map(k)
        k_pos = positions
        if cache is not None:
            k, v, k_pos = cache.update(k, v, positions)
            if placed_later:
                k = self.place_keys(k, k_pos, None if rope is None else rope[0].dtype)
        if cfg.n_query_groups != cfg.n_head:
            repeat = cfg.n_head // cfg.n_query_groups
            k, v = k.repeat_interleave(repeat, dim=1), v.repeat_interleave(repeat, dim=1)
        slot_k, slot_v, slot_bias = self.slots.keys_values(self.feature_map, q) if self.slots else (None, None, None)
        problem = AttentionProblem(
            q,
            k,
            v,
            positions,
            k_pos,
            aligned=cache is None,
            slot_k=slot_k,
            slot_v=slot_v,
            slot_bias=slot_bias,
            position_bias=position_bias,
        )
        spec = self.spec
        if self.key_selector is not None:
            problem.key_mask = self.key_selector(problem)
            if problem.key_mask is not None:
                spec = replace(spec, key_mask=True)
        if need_weights:
            y, weights = self.eager.attend(problem, spec, need_weights=True)
        else:
            backend = self.backend(x.device, q.dtype, torch.is_grad_enabled(), problem.aligned, spec)
            y, weights = backend(problem, spec), None
        if self.slots is not None and self.slots.output_bias() is not None:
            y = y + self.slots.output_bias()
        y = y.transpose(1, 2)
        if self.gate is not None:
            y = self.gate(x, y)
        return self.proj(y.reshape(B, T, -1)), weights
