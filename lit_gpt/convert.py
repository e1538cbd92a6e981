"""Weight and config mapping between our GPT and Hugging Face `LlamaForCausalLM`.

Only models that *are* a LLaMA map: RoPE, pre-norm, softmax attention with the plain causal mask and
no key slots, sink tokens or gates, and a gated MLP (SwiGLU, GeGLU, ReGLU; HF's `hidden_act` picks the
activation). Anything else is refused with a `ConfigError` rather than exported as a model that would
compute something different. Both sides use NeoX-style "rotate half" RoPE, so no permutation of the
query/key rows is needed; our fused `qkv` rows are [q heads; k groups; v groups].
"""

from __future__ import annotations

from typing import Any, Optional

import torch

from lit_gpt.config import Config, ConfigError

HF_ACTIVATION = {"swiglu": "silu", "geglu": "gelu", "reglu": "relu"}

# Field values a config must have to be a LLaMA, with the reason they matter.
LLAMA_FIELDS: dict[str, Any] = {
    "pos_embedding": "rope", "norm_position": "pre", "attn_score": "softmax", "attn_kernel": "none",
    "attn_normalize": "sum", "window_size": 0, "prefix_tokens": 0, "k_bias": False, "v_bias": False,
    "softmax_off_by_one": False, "sink_logit": False, "sink_tokens": 0, "attn_gate": "none",
}


def check_llama(config: Config) -> None:
    """Raise `ConfigError` naming every field that makes `config` something HF's LLaMA cannot compute."""
    differs = [f"{key}={getattr(config, key)!r} (LLaMA: {value!r})"
               for key, value in LLAMA_FIELDS.items() if getattr(config, key) != value]
    if config.mlp not in HF_ACTIVATION:
        differs.append(f"mlp={config.mlp!r} (LLaMA: one of {', '.join(HF_ACTIVATION)})")
    if differs:
        raise ConfigError(f"{config.variant_summary()} is not a LLaMA; differs in {', '.join(differs)}")


def hf_config(config: Config) -> dict[str, Any]:
    """The `LlamaConfig` fields (as written to config.json) of a model with this config."""
    check_llama(config)
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
        "rope_parameters": {"rope_theta": float(config.rope_base),
                            **(hf_rope_scaling(config) or {"rope_type": "default"})},
        "tie_word_embeddings": False,
        "attention_bias": False,
        "mlp_bias": False,
    }


def hf_rope_scaling(config: Config) -> Optional[dict[str, Any]]:
    """The HF `rope_scaling` entry of our RoPE scaling (None without one)."""
    if config.rope_scaling == "default":
        return None
    scaling = {"rope_type": config.rope_scaling, "factor": float(config.rope_scaling_factor)}
    if config.rope_scaling == "llama3":
        scaling.update(low_freq_factor=float(config.rope_low_freq_factor),
                       high_freq_factor=float(config.rope_high_freq_factor),
                       original_max_position_embeddings=config.rope_original_max_seq_len)
    return scaling


# The RoPE parameters each supported HF `rope_type` reads; transformers ignores any other key, but one here
# most likely belongs to a scaling we do not compute, so it is refused rather than dropped.
ROPE_KEYS = {"default": set(), "linear": {"factor"},
             "llama3": {"factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"}}


def _number(value: Any, key: str, integer: bool = False) -> Any:
    """A numeric config.json value (float, or int when `integer`); anything else is a `ConfigError` naming it."""
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not numeric or (integer and not float(value).is_integer()):
        raise ConfigError(f"{key} must be {'an integer' if integer else 'a number'}, got {value!r}")
    return int(value) if integer else float(value)


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
    theta = _number(rope.pop("rope_theta"), "rope_theta")
    if _number(rope.pop("partial_rotary_factor", 1.0), "partial_rotary_factor") != 1.0:
        raise ConfigError("partial_rotary_factor != 1 (RoPE on part of each head) is not supported")
    unknown = sorted(set(rope) - ROPE_KEYS[kind])
    if unknown:
        raise ConfigError(f"RoPE parameters {', '.join(unknown)} of rope_type={kind!r} are not supported")
    missing = sorted(ROPE_KEYS[kind] - set(rope))
    if missing:
        raise ConfigError(f"rope_type={kind!r} needs {', '.join(missing)} in the RoPE parameters")
    values: dict[str, Any] = {"rope_base": theta, "rope_scaling": kind}
    if kind != "default":
        values["rope_scaling_factor"] = _number(rope["factor"], "factor")
    if kind == "llama3":
        values.update(rope_low_freq_factor=_number(rope["low_freq_factor"], "low_freq_factor"),
                      rope_high_freq_factor=_number(rope["high_freq_factor"], "high_freq_factor"),
                      rope_original_max_seq_len=_number(rope["original_max_position_embeddings"],
                                                        "original_max_position_embeddings", integer=True))
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
        block_size=hf.get("max_position_embeddings", 2048), vocab_size=hf["vocab_size"],
        padded_vocab_size=hf["vocab_size"], n_layer=hf["num_hidden_layers"], n_head=hf["num_attention_heads"],
        n_embd=hf["hidden_size"], head_size=hf.get("head_dim") or hf["hidden_size"] // hf["num_attention_heads"],
        n_query_groups=hf.get("num_key_value_heads") or hf["num_attention_heads"],
        intermediate_size=hf["intermediate_size"], norm_eps=hf.get("rms_norm_eps", 1e-6),
        mlp=activation[hf.get("hidden_act", "silu")], **rope_from_hf(hf),
    )
    values.update(overrides)
    return Config.from_dict(values)


def _layer_names(i: int) -> dict[str, str]:
    """Our parameter name -> HF's, for block i (qkv is split separately)."""
    return {
        f"blocks.{i}.norm_1.weight": f"model.layers.{i}.input_layernorm.weight",
        f"blocks.{i}.attn.proj.weight": f"model.layers.{i}.self_attn.o_proj.weight",
        f"blocks.{i}.norm_2.weight": f"model.layers.{i}.post_attention_layernorm.weight",
        **{f"blocks.{i}.mlp.{p}.weight": f"model.layers.{i}.mlp.{p}.weight" for p in ("gate_proj", "up_proj", "down_proj")},
    }


def _names(config: Config) -> dict[str, str]:
    names = {"wte.weight": "model.embed_tokens.weight", "norm.weight": "model.norm.weight",
             "lm_head.weight": "lm_head.weight"}
    for i in range(config.n_layer):
        names.update(_layer_names(i))
    return names


def _qkv_sizes(config: Config) -> tuple[int, int, int]:
    return (config.n_head * config.head_size,) + (config.n_query_groups * config.head_size,) * 2


def to_hf_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """HF `LlamaForCausalLM` state dict of our GPT (new tensors, safe to save with safetensors)."""
    config = model.config
    check_llama(config)
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
    shapes = {"model.embed_tokens.weight": (config.padded_vocab_size, d), "model.norm.weight": (d,),
              "lm_head.weight": (config.padded_vocab_size, d)}
    for i in range(config.n_layer):
        layer = f"model.layers.{i}."
        shapes.update({
            layer + "input_layernorm.weight": (d,), layer + "post_attention_layernorm.weight": (d,),
            layer + "self_attn.q_proj.weight": (q, d), layer + "self_attn.k_proj.weight": (k, d),
            layer + "self_attn.v_proj.weight": (v, d), layer + "self_attn.o_proj.weight": (d, q),
            layer + "mlp.gate_proj.weight": (inner, d), layer + "mlp.up_proj.weight": (inner, d),
            layer + "mlp.down_proj.weight": (d, inner),
        })
    return shapes


def check_hf_state_dict(state_dict: dict[str, torch.Tensor], config: Config) -> None:
    """Raise `ConfigError` unless `state_dict` holds exactly the tensors, in the shapes, of a HF LLaMA with
    this config: weights from another config must not load into part of the model, or be dropped."""
    expected = _hf_shapes(config)
    unused = sorted(name for name in set(state_dict) - set(expected) if not name.endswith("rotary_emb.inv_freq"))
    if unused:
        raise ConfigError(f"HF weights our model has no place for: {', '.join(unused[:5])}")
    missing = sorted(set(expected) - set(state_dict))
    if missing:
        raise ConfigError(f"HF weights lack {len(missing)} tensors the config needs: {', '.join(missing[:3])}")
    wrong = [f"{name} {list(state_dict[name].shape)} (config: {list(shape)})"
             for name, shape in expected.items() if tuple(state_dict[name].shape) != shape]
    if wrong:
        raise ConfigError(f"HF weights of other shapes than the config's: {', '.join(wrong[:3])}")


def from_hf_state_dict(state_dict: dict[str, torch.Tensor], config: Config) -> dict[str, torch.Tensor]:
    """Our GPT's state dict from a HF `LlamaForCausalLM` state dict (for `GPT(config).load_state_dict`).

    A checkpoint with tied embeddings may omit `lm_head.weight`; the head is then a copy of the
    embedding. Tensors that would be left unused (biases, extra layers), missing or of another shape
    are an error (`check_hf_state_dict`), not dropped or left at their initial values.
    """
    check_llama(config)
    state_dict = dict(state_dict)
    if "model.embed_tokens.weight" in state_dict:
        state_dict.setdefault("lm_head.weight", state_dict["model.embed_tokens.weight"])
    check_hf_state_dict(state_dict, config)
    ours = {name: state_dict[theirs].clone() for name, theirs in _names(config).items()}
    for i in range(config.n_layer):
        parts = [state_dict[f"model.layers.{i}.self_attn.{p}.weight"] for p in ("q_proj", "k_proj", "v_proj")]
        ours[f"blocks.{i}.attn.qkv.weight"] = torch.cat(parts)
    return ours
