"""Weight and config mapping between our GPT and the Hugging Face causal LMs it can be: a LLaMA
(`LlamaForCausalLM`, `lit_gpt.hf.families.llama`) or a GPT-2 (`GPT2LMHeadModel`, `lit_gpt.hf.families.gpt2`).

A config exports as the family of its position encoding: learned positions make a GPT-2, any other a
LLaMA. A HF config imports by its `model_type`. Each family refuses, naming the fields, a variant its HF
model would compute differently, rather than writing a model that computes something else.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import torch

from lit_gpt.hf.families import gpt2, llama
from lit_gpt.model.config import Config, ConfigError
from lit_gpt.model.gpt import GPT

FAMILIES: dict[str, ModuleType] = {"llama": llama, "gpt2": gpt2}


def family_of(config: Config) -> ModuleType:
    """The family module a config exports as (and whose refusal names what keeps it from being one)."""
    return gpt2 if config.pos_embedding == "learnable" else llama


def hf_family(hf: dict[str, Any]) -> ModuleType:
    """The family module of a HF config dict, by its `model_type`."""
    model_type = hf.get("model_type")
    if not isinstance(model_type, str) or model_type not in FAMILIES:
        raise ConfigError(f"model_type={model_type!r} is not one of {', '.join(FAMILIES)}")
    return FAMILIES[model_type]


def hf_config(config: Config) -> dict[str, Any]:
    """The HF config.json fields of a model with this config."""
    return family_of(config).hf_config(config)


def config_from_hf(hf: dict[str, Any], **overrides: Any) -> Config:
    """Our `Config` for a HF config dict of any family here."""
    return hf_family(hf).config_from_hf(hf, **overrides)


def to_hf_state_dict(model: GPT) -> dict[str, torch.Tensor]:
    """The HF state dict of our GPT (new tensors, safe to save with safetensors)."""
    return family_of(model.config).to_hf_state_dict(model)


def from_hf_state_dict(state_dict: dict[str, torch.Tensor], config: Config) -> dict[str, torch.Tensor]:
    """Our GPT's state dict from HF weights of a model with this config."""
    return family_of(config).from_hf_state_dict(state_dict, config)


__all__ = [
    "FAMILIES",
    "config_from_hf",
    "family_of",
    "from_hf_state_dict",
    "hf_config",
    "hf_family",
    "to_hf_state_dict",
]
