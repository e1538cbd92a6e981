"""Keys and values of a Hugging Face decoder layer, read by forward hooks on the modules that project them.

Why: transformers returns attention maps and hidden states of any causal LM, but keys and values only
inside its KV cache, in a layout each architecture chooses. The projections that compute them are
ordinary modules, so a hook on them sees the keys and values of every probe batch. Keys come before
RoPE, which is a rotation and keeps their norms; a key or value norm the model applies after the
projection (Qwen3's, OLMo2's, Gemma3's `k_norm`) is hooked instead, because it does change them.

Known layouts, each split into (B, G, T, D) with G key/value heads of D channels:

- separate `k_proj` / `v_proj` in the layer (LLaMA, Mistral, Qwen, Gemma, OPT, Phi, GPT-J, GPT-Neo, ...);
- `[q | k | v]` side by side in one output (GPT-2 `attn.c_attn`, Phi-3 `self_attn.qkv_proj`);
- `(q, k, v)` next to each other within every head (GPT-NeoX `attention.query_key_value`, Bloom
  `self_attention.query_key_value`).

Fused projections are told apart by `model_type`, since the same module name means other layouts in
other architectures (Falcon's `query_key_value`, CodeGen's `qkv_proj`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

Split = Callable[[dict[str, torch.Tensor]], tuple[torch.Tensor, torch.Tensor]]

KEY_NORMS = ("k_norm", "k_layernorm")
VALUE_NORMS = ("v_norm",)
SIDE_BY_SIDE = {"gpt2": "attn.c_attn", "phi3": "self_attn.qkv_proj"}
PER_HEAD = {"gpt_neox": "attention.query_key_value", "bloom": "self_attention.query_key_value"}


class KeyValueUnavailable(Exception):
    """The keys and values of a model cannot be read; the message says which architecture and why."""


@dataclass(frozen=True)
class KeyValueReader:
    """The modules of one layer to hook (by name) and how their outputs become keys and values (B, G, T, D)."""

    modules: dict[str, nn.Module]
    split: Split


@dataclass(frozen=True)
class HeadShape:
    """Attention heads of a HF config: H query heads, G key/value heads, D channels each."""

    n_head: int
    n_query_groups: int
    head_dim: int

    @classmethod
    def of(cls, config) -> "HeadShape":
        n_head = config.num_attention_heads
        n_query_groups = getattr(config, "num_key_value_heads", None) or n_head
        return cls(n_head, n_query_groups, getattr(config, "head_dim", None) or config.hidden_size // n_head)


def to_heads(x: torch.Tensor, head_dim: int) -> torch.Tensor:
    """(B, T, G * D) or (B, T, G, D) -> (B, G, T, D)."""
    return x.reshape(*x.shape[:2], -1, head_dim).transpose(1, 2)


def _named(layer: nn.Module, leaf: str) -> list[tuple[str, nn.Module]]:
    return [(name, module) for name, module in layer.named_modules() if name.rsplit(".", 1)[-1] == leaf]


def _output_after_norm(layer: nn.Module, name: str, module: nn.Module, norms: tuple[str, ...]) -> nn.Module:
    """The projection's norm sibling when the attention has one (it changes the norms), else the projection."""
    parent = layer.get_submodule(name.rpartition(".")[0])
    return next((getattr(parent, norm) for norm in norms if isinstance(getattr(parent, norm, None), nn.Module)), module)


def _check_width(name: str, module: nn.Module, width: int, layout: str) -> None:
    """A projection of another width than its layout needs has a layout of its own: refused, not misread."""
    features = getattr(module, "out_features", None) or getattr(module, "nf", None)  # nn.Linear, GPT-2's Conv1D
    if features is not None and features != width:
        raise KeyValueUnavailable(f"{name} gives {features} features, not the {width} of {layout}")


def separate_projections(layer: nn.Module, shape: HeadShape) -> KeyValueReader:
    """Exactly one `k_proj` and one `v_proj` somewhere in the layer, each giving G heads of D channels."""
    found = {leaf: _named(layer, leaf) for leaf in ("k_proj", "v_proj")}
    if any(len(matches) != 1 for matches in found.values()):
        counts = " and ".join(f"{len(matches)} {leaf}" for leaf, matches in found.items())
        raise KeyValueUnavailable(
            f"its layers hold {counts} modules where one of each is needed, and no fused "
            f"query/key/value projection whose layout this evaluation knows"
        )
    ((k_name, k_proj),) = found["k_proj"]
    ((v_name, v_proj),) = found["v_proj"]
    for name, module in ((k_name, k_proj), (v_name, v_proj)):
        _check_width(
            name,
            module,
            shape.n_query_groups * shape.head_dim,
            f"{shape.n_query_groups} key/value heads x {shape.head_dim} channels",
        )
    modules = {
        "keys": _output_after_norm(layer, k_name, k_proj, KEY_NORMS),
        "values": _output_after_norm(layer, v_name, v_proj, VALUE_NORMS),
    }
    return KeyValueReader(
        modules, lambda out: (to_heads(out["keys"], shape.head_dim), to_heads(out["values"], shape.head_dim))
    )


def side_by_side(name: str, module: nn.Module, shape: HeadShape) -> KeyValueReader:
    """[q (H * D) | k (G * D) | v (G * D)] along the last dimension."""
    q_width, kv_width = shape.n_head * shape.head_dim, shape.n_query_groups * shape.head_dim
    _check_width(name, module, q_width + 2 * kv_width, "[q | k | v] side by side")

    def split(out: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        _, k, v = out["qkv"].split((q_width, kv_width, kv_width), dim=-1)
        return to_heads(k, shape.head_dim), to_heads(v, shape.head_dim)

    return KeyValueReader({"qkv": module}, split)


def per_head(name: str, module: nn.Module, shape: HeadShape) -> KeyValueReader:
    """Per head, q, k and v of D channels each, one after the other: (..., H, 3, D)."""
    _check_width(name, module, 3 * shape.n_head * shape.head_dim, "(q, k, v) within each head")

    def split(out: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        qkv = out["qkv"]
        heads = qkv.view(*qkv.shape[:2], shape.n_head, 3, shape.head_dim)
        return heads[..., 1, :].transpose(1, 2), heads[..., 2, :].transpose(1, 2)

    return KeyValueReader({"qkv": module}, split)


def layer_reader(model: Any, layer: nn.Module) -> KeyValueReader:
    """How to read one decoder layer's keys and values; `KeyValueUnavailable` when no layout fits."""
    shape = HeadShape.of(model.config)
    model_type = model.config.model_type
    for layouts, reader in ((SIDE_BY_SIDE, side_by_side), (PER_HEAD, per_head)):
        if model_type in layouts:
            name = layouts[model_type]
            try:
                module = layer.get_submodule(name)
            except AttributeError:
                raise KeyValueUnavailable(
                    f"its layers have no {name}, where this architecture keeps its fused query/key/value projection"
                ) from None
            return reader(name, module, shape)
    return separate_projections(layer, shape)


def key_value_readers(model: Any, layers: list[nn.Module]) -> list[KeyValueReader]:
    """One reader per decoder layer; the `KeyValueUnavailable` message names the architecture."""
    try:
        return [layer_reader(model, layer) for layer in layers]
    except KeyValueUnavailable as error:
        raise KeyValueUnavailable(f"{type(model).__name__} (model_type {model.config.model_type!r}): {error}") from None


__all__ = ["HeadShape", "KeyValueReader", "KeyValueUnavailable", "key_value_readers", "layer_reader", "to_heads"]
