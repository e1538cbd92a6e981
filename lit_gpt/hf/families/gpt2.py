"""Weight and config mapping between our GPT and Hugging Face `GPT2LMHeadModel`.

Only models that *are* a GPT-2 map: learned absolute positions, pre-norm LayerNorm, biases in every
projection, multi-head attention (no grouped queries) with plain softmax over the causal mask and no key
slots, sink tokens or gates, and a plain MLP whose activation HF's `activation_function` names. The
embeddings may be tied (GPT-2's own) or not. Anything else is refused with a `ConfigError`.

HF keeps GPT-2's `Conv1D` layers, whose weights are stored (in, out), the transpose of `nn.Linear`'s;
`c_attn` is [q | k | v] along its output, the row order of our fused `qkv` for multi-head attention.
HF's default `gelu_new` writes the tanh GELU out in Python and differs from torch's kernel by float
rounding (~1e-7), so an export names `gelu_pytorch_tanh`, which is torch's kernel, and an import reads
both as `gelu_tanh`.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from lit_gpt.hf.families.common import PLAIN_ATTENTION, check_shapes, drop_tied_head, flag, number, refuse_unless
from lit_gpt.model.config import GPT2_STRUCTURE, Config, ConfigError
from lit_gpt.model.gpt import GPT

NAME = "GPT-2"
# The config.json keys a GPT-2 cannot be built without (the others have transformers' defaults).
REQUIRED_KEYS = ("vocab_size", "n_embd", "n_layer", "n_head")

HF_ACTIVATION = {"gelu_tanh": "gelu_pytorch_tanh", "gelu": "gelu", "relu": "relu", "swish": "silu"}
# Also HF's other names of the same functions: GPT-2's default `gelu_new`, and `swish` for `silu`.
FROM_HF_ACTIVATION = {**{act: kind for kind, act in HF_ACTIVATION.items()}, "gelu_new": "gelu_tanh", "swish": "swish"}

# Field values a config must have to be a GPT-2 (the MLP kind and weight tying are free).
GPT2_FIELDS: dict[str, Any] = {
    "pos_embedding": "learnable",
    "norm_class": "layernorm",
    "norm_position": "pre",
    "bias": True,
    **PLAIN_ATTENTION,
}

# Attention options of HF's GPT-2 that our attention does not compute, with the value it does compute.
HF_ATTENTION = {"scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False, "add_cross_attention": False}

# Causal-mask buffers older GPT-2 checkpoints (OpenAI's `gpt2` on the hub) store next to the weights.
MASK_BUFFER = re.compile(r"\.attn\.(masked_)?bias$")
# Our Linear weights that HF stores as Conv1D (transposed), by the end of our name.
CONV1D = ("attn.qkv.weight", "attn.proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight")


def exports(config: Config) -> bool:
    """Learned absolute positions are GPT-2's."""
    return config.pos_embedding == "learnable"


def check(config: Config) -> None:
    """Raise `ConfigError` naming every field that makes `config` something HF's GPT-2 cannot compute."""
    other = []
    if config.n_query_groups != config.n_head:
        other.append(f"n_query_groups={config.n_query_groups} ({NAME}: n_head={config.n_head})")
    if config.head_size * config.n_head != config.n_embd:
        other.append(f"head_size={config.head_size} ({NAME}: n_embd // n_head={config.n_embd // config.n_head})")
    refuse_unless(config, NAME, GPT2_FIELDS, HF_ACTIVATION, other)


def hf_config(config: Config) -> dict[str, Any]:
    """The `GPT2Config` fields (as written to config.json) of a model with this config."""
    check(config)
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": config.padded_vocab_size,
        "n_positions": config.block_size,
        "n_embd": config.n_embd,
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "n_inner": config.intermediate_size,
        "activation_function": HF_ACTIVATION[config.mlp],
        "layer_norm_epsilon": config.norm_eps,
        "tie_word_embeddings": config.tie_embeddings,
        # our model has no dropout; HF training of the export should not add any
        "resid_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "attn_pdrop": 0.0,
        # GPT2Config's defaults are GPT-2's tokenizer's ids, which another vocabulary does not have
        "bos_token_id": None,
        "eos_token_id": None,
        **HF_ATTENTION,
    }


def config_from_hf(hf: dict[str, Any], **overrides: Any) -> Config:
    """Our `Config` for a HF GPT-2 config dict (the inverse of `hf_config`)."""
    activation = hf.get("activation_function", "gelu_new")
    if activation not in FROM_HF_ACTIVATION:
        raise ConfigError(f"activation_function={activation!r} has no MLP here; valid: {', '.join(FROM_HF_ACTIVATION)}")
    differs = [f"{key}={hf[key]!r}" for key, value in HF_ATTENTION.items() if key in hf and hf[key] != value]
    if differs:
        raise ConfigError(
            f"{', '.join(differs)}: this GPT-2's attention is not ours (which needs "
            f"{', '.join(f'{k}={v}' for k, v in HF_ATTENTION.items())})"
        )
    n_embd = hf["n_embd"]
    values = dict(
        GPT2_STRUCTURE,
        block_size=hf.get("n_positions", 1024),
        vocab_size=hf["vocab_size"],
        padded_vocab_size=hf["vocab_size"],
        n_layer=hf["n_layer"],
        n_head=hf["n_head"],
        n_embd=n_embd,
        intermediate_size=number(hf.get("n_inner") or 4 * n_embd, "n_inner", integer=True),
        norm_eps=number(hf.get("layer_norm_epsilon", 1e-5), "layer_norm_epsilon"),
        mlp=FROM_HF_ACTIVATION[activation],
        tie_embeddings=flag(hf, "tie_word_embeddings", True),
    )
    values.update(overrides)
    return Config.from_dict(values)


def _names(config: Config) -> dict[str, str]:
    """Our parameter name -> HF's."""
    names = {
        "wte.weight": "transformer.wte.weight",
        "wpe.weight": "transformer.wpe.weight",
        "norm.weight": "transformer.ln_f.weight",
        "norm.bias": "transformer.ln_f.bias",
    }
    if not config.tie_embeddings:
        names["lm_head.weight"] = "lm_head.weight"
    parts = {
        "norm_1": "ln_1",
        "norm_2": "ln_2",
        "attn.qkv": "attn.c_attn",
        "attn.proj": "attn.c_proj",
        "mlp.up_proj": "mlp.c_fc",
        "mlp.down_proj": "mlp.c_proj",
    }
    for i in range(config.n_layer):
        for ours, theirs in parts.items():
            for kind in ("weight", "bias"):
                names[f"blocks.{i}.{ours}.{kind}"] = f"transformer.h.{i}.{theirs}.{kind}"
    return names


def _to_hf(name: str, tensor: torch.Tensor) -> torch.Tensor:
    return tensor.T if name.endswith(CONV1D) else tensor


def to_hf_state_dict(model: GPT) -> dict[str, torch.Tensor]:
    """HF `GPT2LMHeadModel` state dict of our GPT (new contiguous tensors, safe to save with safetensors)."""
    config = model.config
    check(config)
    ours = model.state_dict()
    return {theirs: _to_hf(name, ours[name].detach()).contiguous().clone() for name, theirs in _names(config).items()}


def _hf_shapes(config: Config) -> dict[str, tuple[int, ...]]:
    """The shape of every tensor of a HF GPT-2 with this config, by HF name: our model's, transposed where
    HF keeps a Conv1D (a meta-device model, so nothing is allocated)."""
    with torch.device("meta"):
        ours = GPT(config).state_dict()
    return {theirs: tuple(_to_hf(name, ours[name]).shape) for name, theirs in _names(config).items()}


def _hf_names(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF weights under the names `GPT2LMHeadModel` uses: OpenAI's original files name the transformer's
    tensors without the `transformer.` prefix and store the causal-mask buffers, which are not weights."""
    named = {}
    for name, tensor in state_dict.items():
        if MASK_BUFFER.search(name):
            continue
        named[name if name.startswith("transformer.") or name == "lm_head.weight" else f"transformer.{name}"] = tensor
    return named


def from_hf_state_dict(state_dict: dict[str, torch.Tensor], config: Config) -> dict[str, torch.Tensor]:
    """Our GPT's state dict from a HF `GPT2LMHeadModel` state dict (for `GPT(config).load_state_dict`).

    With tied embeddings a `lm_head.weight` in the files must equal the embedding. Tensors that would be
    left unused, missing or of another shape are an error (`check_shapes`), never dropped or left at
    their initial values.
    """
    check(config)
    state_dict = _hf_names(state_dict)
    if config.tie_embeddings:
        drop_tied_head(state_dict, "lm_head.weight", "transformer.wte.weight")
    check_shapes(state_dict, _hf_shapes(config))
    return {name: _to_hf(name, state_dict[theirs]).contiguous().clone() for name, theirs in _names(config).items()}


__all__ = [
    "exports",
    "GPT2_FIELDS",
    "HF_ACTIVATION",
    "NAME",
    "REQUIRED_KEYS",
    "check",
    "config_from_hf",
    "from_hf_state_dict",
    "hf_config",
    "to_hf_state_dict",
]
