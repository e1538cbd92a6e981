"""Weight and config mapping between our GPT and Hugging Face `LlamaForCausalLM`.

Only models that *are* a LLaMA map: RoPE, pre-norm RMSNorm, no biases, softmax attention with the plain
causal mask and no key slots, sink tokens or gates, and a gated MLP (SwiGLU, GeGLU, ReGLU; HF's
`hidden_act` picks the activation). Anything else is refused with a `ConfigError` rather than exported as
a model that would compute something different. Both sides use NeoX-style "rotate half" RoPE, so no
permutation of the query/key rows is needed; our fused `qkv` rows are [q heads; k groups; v groups].
Tied embeddings are HF's `tie_word_embeddings`; the files then hold no `lm_head.weight`, as transformers
writes them.
"""

from __future__ import annotations

from typing import Any, Optional

import torch

from lit_gpt.hf.families.common import PLAIN_ATTENTION, check_shapes, drop_tied_head, flag, number, refuse_unless
from lit_gpt.model.config import Config, ConfigError
from lit_gpt.model.gpt import GPT

NAME = "LLaMA"
# The config.json keys a LLaMA cannot be built without (the others have transformers' defaults).
REQUIRED_KEYS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")

HF_ACTIVATION = {"swiglu": "silu", "geglu": "gelu", "reglu": "relu"}

# Field values a config must have to be a LLaMA.
LLAMA_FIELDS: dict[str, Any] = {
    "pos_embedding": "rope",
    "norm_position": "pre",
    "norm_class": "rmsnorm",
    "bias": False,
    **PLAIN_ATTENTION,
}


def exports(config: Config) -> bool:
    """Every position encoding but learned absolute positions (those are GPT-2's)."""
    return config.pos_embedding != "learnable"


def check(config: Config) -> None:
    """Raise `ConfigError` naming every field that makes `config` something HF's LLaMA cannot compute."""
    refuse_unless(config, NAME, LLAMA_FIELDS, HF_ACTIVATION)


def hf_config(config: Config) -> dict[str, Any]:
    """The `LlamaConfig` fields (as written to config.json) of a model with this config."""
    check(config)
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": config.padded_vocab_size,
        "hidden_size": config.n_embd,
        "intermediate_size": config.intermediate_size,
        "num_hidden_layers": config.n_layer,
        "num_attention_heads": config.n_head,
        "num_key_value_heads": config.n_query_groups,
        "head_dim": config.head_size,
        "hidden_act": HF_ACTIVATION[config.mlp],
        "max_position_embeddings": config.block_size,
        "rms_norm_eps": config.norm_eps,
        # transformers >= 5 reads rope_parameters, older versions rope_theta and rope_scaling
        "rope_theta": float(config.rope_base),
        "rope_scaling": hf_rope_scaling(config),
        "rope_parameters": {
            "rope_theta": float(config.rope_base),
            **(hf_rope_scaling(config) or {"rope_type": "default"}),
        },
        "tie_word_embeddings": config.tie_embeddings,
        "attention_bias": False,
        "mlp_bias": False,
    }


def hf_rope_scaling(config: Config) -> Optional[dict[str, Any]]:
    """The HF `rope_scaling` entry of our RoPE scaling (None without one)."""
    if config.rope_scaling == "default":
        return None
    scaling = {"rope_type": config.rope_scaling, "factor": float(config.rope_scaling_factor)}
    if config.rope_scaling == "llama3":
        scaling.update(
            low_freq_factor=float(config.rope_low_freq_factor),
            high_freq_factor=float(config.rope_high_freq_factor),
            original_max_position_embeddings=config.rope_original_max_seq_len,
        )
    return scaling


# The RoPE parameters each supported HF `rope_type` reads; transformers ignores any other key, but one here
# most likely belongs to a scaling we do not compute, so it is refused rather than dropped.
ROPE_KEYS = {
    "default": set(),
    "linear": {"factor"},
    "llama3": {"factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"},
}


def _hf_rope(hf: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The RoPE type and parameters transformers computes for a HF config in either form: `rope_parameters`
    (transformers >= 5), or the 4.x `rope_theta` + `rope_scaling` (whose type key is `type` or `rope_type`).
    Like transformers, a top-level `original_max_position_embeddings` overrides the one in the parameters
    and `max_position_embeddings` stands in for a missing one; a top-level `partial_rotary_factor` counts."""
    rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    if not isinstance(rope, dict):
        raise ConfigError(f"the RoPE parameters must be a mapping, got {rope!r}")
    rope = dict(rope)
    kind = rope.pop("rope_type", None) or rope.pop("type", None) or "default"
    rope.pop("type", None)
    rope.setdefault("rope_theta", hf.get("rope_theta", 10000.0))
    if "partial_rotary_factor" in hf:
        rope.setdefault("partial_rotary_factor", hf["partial_rotary_factor"])
    if kind == "llama3":
        rope.setdefault("original_max_position_embeddings", hf.get("max_position_embeddings", 2048))
        if "original_max_position_embeddings" in hf:
            rope["original_max_position_embeddings"] = hf["original_max_position_embeddings"]
    return kind, rope


def rope_from_hf(hf: dict[str, Any]) -> dict[str, Any]:
    """Our RoPE fields from a HF config (see `_hf_rope`). Scalings we cannot compute exactly are refused,
    never imported as plain RoPE."""
    kind, rope = _hf_rope(hf)
    if kind not in ROPE_KEYS:
        raise ConfigError(f"RoPE scaling rope_type={kind!r} is not supported; only {', '.join(ROPE_KEYS)} are")
    theta = number(rope.pop("rope_theta"), "rope_theta")
    if number(rope.pop("partial_rotary_factor", 1.0), "partial_rotary_factor") != 1.0:
        raise ConfigError("partial_rotary_factor != 1 (RoPE on part of each head) is not supported")
    unknown = sorted(set(rope) - ROPE_KEYS[kind])
    if unknown:
        raise ConfigError(f"RoPE parameters {', '.join(unknown)} of rope_type={kind!r} are not supported")
    missing = sorted(ROPE_KEYS[kind] - set(rope))
    if missing:
        raise ConfigError(f"rope_type={kind!r} needs {', '.join(missing)} in the RoPE parameters")
    values: dict[str, Any] = {"rope_base": theta, "rope_scaling": kind}
    if kind != "default":
        values["rope_scaling_factor"] = number(rope["factor"], "factor")
    if kind == "llama3":
        values.update(
            rope_low_freq_factor=number(rope["low_freq_factor"], "low_freq_factor"),
            rope_high_freq_factor=number(rope["high_freq_factor"], "high_freq_factor"),
            rope_original_max_seq_len=number(
                rope["original_max_position_embeddings"], "original_max_position_embeddings", integer=True
            ),
        )
    return values


def config_from_hf(hf: dict[str, Any], **overrides: Any) -> Config:
    """Our `Config` for a HF LLaMA config dict (the inverse of `hf_config`)."""
    activation = {act: kind for kind, act in HF_ACTIVATION.items()}
    if hf.get("hidden_act", "silu") not in activation:
        raise ConfigError(f"hidden_act={hf['hidden_act']!r} has no gated MLP here; valid: {', '.join(activation)}")
    biased = [key for key in ("attention_bias", "mlp_bias") if hf.get(key)]
    if biased:
        raise ConfigError(f"{', '.join(biased)} set: this LLaMA has bias terms, which our model does not have")
    values = dict(
        block_size=hf.get("max_position_embeddings", 2048),
        vocab_size=hf["vocab_size"],
        padded_vocab_size=hf["vocab_size"],
        n_layer=hf["num_hidden_layers"],
        n_head=hf["num_attention_heads"],
        n_embd=hf["hidden_size"],
        head_size=hf.get("head_dim") or hf["hidden_size"] // hf["num_attention_heads"],
        n_query_groups=hf.get("num_key_value_heads") or hf["num_attention_heads"],
        intermediate_size=hf["intermediate_size"],
        norm_eps=hf.get("rms_norm_eps", 1e-6),
        mlp=activation[hf.get("hidden_act", "silu")],
        tie_embeddings=flag(hf, "tie_word_embeddings", False),
        **rope_from_hf(hf),
    )
    values.update(overrides)
    return Config.from_dict(values)


def _layer_names(i: int) -> dict[str, str]:
    """Our parameter name -> HF's, for block i (qkv is split separately)."""
    return {
        f"blocks.{i}.norm_1.weight": f"model.layers.{i}.input_layernorm.weight",
        f"blocks.{i}.attn.proj.weight": f"model.layers.{i}.self_attn.o_proj.weight",
        f"blocks.{i}.norm_2.weight": f"model.layers.{i}.post_attention_layernorm.weight",
        **{
            f"blocks.{i}.mlp.{p}.weight": f"model.layers.{i}.mlp.{p}.weight"
            for p in ("gate_proj", "up_proj", "down_proj")
        },
    }


def _names(config: Config) -> dict[str, str]:
    names = {"wte.weight": "model.embed_tokens.weight", "norm.weight": "model.norm.weight"}
    if not config.tie_embeddings:
        names["lm_head.weight"] = "lm_head.weight"
    for i in range(config.n_layer):
        names.update(_layer_names(i))
    return names


def _qkv_sizes(config: Config) -> tuple[int, int, int]:
    return (config.n_head * config.head_size,) + (config.n_query_groups * config.head_size,) * 2


def to_hf_state_dict(model: GPT) -> dict[str, torch.Tensor]:
    """HF `LlamaForCausalLM` state dict of our GPT (new tensors, safe to save with safetensors)."""
    config = model.config
    check(config)
    ours = model.state_dict()
    hf = {theirs: ours[name].detach().clone() for name, theirs in _names(config).items()}
    for i in range(config.n_layer):
        q, k, v = ours[f"blocks.{i}.attn.qkv.weight"].detach().split(_qkv_sizes(config))
        for proj, weight in zip(("q_proj", "k_proj", "v_proj"), (q, k, v)):
            hf[f"model.layers.{i}.self_attn.{proj}.weight"] = weight.clone()
    return hf


def _hf_shapes(config: Config) -> dict[str, tuple[int, ...]]:
    """The shape of every tensor of a HF LLaMA with this config, by HF name."""
    d, inner = config.n_embd, config.intermediate_size
    q, k, v = _qkv_sizes(config)
    shapes = {"model.embed_tokens.weight": (config.padded_vocab_size, d), "model.norm.weight": (d,)}
    if not config.tie_embeddings:
        shapes["lm_head.weight"] = (config.padded_vocab_size, d)
    for i in range(config.n_layer):
        layer = f"model.layers.{i}."
        shapes.update(
            {
                layer + "input_layernorm.weight": (d,),
                layer + "post_attention_layernorm.weight": (d,),
                layer + "self_attn.q_proj.weight": (q, d),
                layer + "self_attn.k_proj.weight": (k, d),
                layer + "self_attn.v_proj.weight": (v, d),
                layer + "self_attn.o_proj.weight": (d, q),
                layer + "mlp.gate_proj.weight": (inner, d),
                layer + "mlp.up_proj.weight": (inner, d),
                layer + "mlp.down_proj.weight": (d, inner),
            }
        )
    return shapes


def from_hf_state_dict(state_dict: dict[str, torch.Tensor], config: Config) -> dict[str, torch.Tensor]:
    """Our GPT's state dict from a HF `LlamaForCausalLM` state dict (for `GPT(config).load_state_dict`).

    With tied embeddings a `lm_head.weight` in the files must equal the embedding (transformers would
    use the embedding either way). Tensors that would be left unused (biases, extra layers), missing or
    of another shape are an error (`check_shapes`), not dropped or left at their initial values.
    """
    check(config)
    state_dict = {name: t for name, t in state_dict.items() if not name.endswith("rotary_emb.inv_freq")}
    if config.tie_embeddings:
        drop_tied_head(state_dict, "lm_head.weight", "model.embed_tokens.weight")
    check_shapes(state_dict, _hf_shapes(config))
    ours = {name: state_dict[theirs].clone() for name, theirs in _names(config).items()}
    for i in range(config.n_layer):
        parts = [state_dict[f"model.layers.{i}.self_attn.{p}.weight"] for p in ("q_proj", "k_proj", "v_proj")]
        ours[f"blocks.{i}.attn.qkv.weight"] = torch.cat(parts)
    return ours


__all__ = [
    "exports",
    "HF_ACTIVATION",
    "LLAMA_FIELDS",
    "NAME",
    "REQUIRED_KEYS",
    "check",
    "config_from_hf",
    "from_hf_state_dict",
    "hf_config",
    "rope_from_hf",
    "to_hf_state_dict",
]
