"""Weight and config mapping between our GPT and the Hugging Face causal LMs it can be: a LLaMA
(`LlamaForCausalLM`, `lit_gpt.hf.families.llama`) or a GPT-2 (`GPT2LMHeadModel`, `lit_gpt.hf.families.gpt2`).

Each family is a module with the members of `Family`, registered in `FAMILIES` under its `model_type`. A
config exports as the family that claims it: learned positions make a GPT-2, any other encoding a LLaMA.
A HF config imports by its `model_type`. Each family refuses, naming the fields, a variant its HF
model would compute differently, rather than writing a model that computes something else.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch

from lit_gpt.hf.families import gpt2, llama
from lit_gpt.model.config import Config, ConfigError
from lit_gpt.model.gpt import GPT


class Family(Protocol):
    """What a family module provides; each module of this package is one, and mypy checks it against this
    where it is registered."""

    @property
    def NAME(self) -> str:
        """The family's name in messages (`LLaMA`, `GPT-2`)."""
        ...

    @property
    def REQUIRED_KEYS(self) -> tuple[str, ...]:
        """config.json keys without which a HF config of the family is not complete."""
        ...

    def exports(self, config: Config) -> bool:
        """Whether a model with this config exports as this family (at most one family claims a config)."""
        ...

    def check(self, config: Config) -> None:
        """Raise `ConfigError` naming each field whose variant the HF model would compute differently."""
        ...

    def hf_config(self, config: Config) -> dict[str, Any]: ...

    def config_from_hf(self, hf: dict[str, Any], **overrides: Any) -> Config: ...

    def to_hf_state_dict(self, model: GPT) -> dict[str, torch.Tensor]: ...

    def from_hf_state_dict(self, state_dict: dict[str, torch.Tensor], config: Config) -> dict[str, torch.Tensor]: ...


# By the `model_type` of their config.json. A config exports as the family that claims it (`exports`), else as
# the default: LLaMA, which holds every position encoding HF's GPT-2 lacks.
FAMILIES: dict[str, Family] = {"llama": llama, "gpt2": gpt2}
DEFAULT_EXPORT = "llama"


def family_of(config: Config) -> Family:
    """The family a config exports as (and whose refusal names what keeps it from being one)."""
    claiming = [family for name, family in FAMILIES.items() if name != DEFAULT_EXPORT and family.exports(config)]
    return claiming[0] if claiming else FAMILIES[DEFAULT_EXPORT]


def hf_family(hf: dict[str, Any]) -> Family:
    """The family of a HF config dict, by its `model_type`."""
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
    "DEFAULT_EXPORT",
    "FAMILIES",
    "Family",
    "config_from_hf",
    "family_of",
    "from_hf_state_dict",
    "hf_config",
    "hf_family",
    "to_hf_state_dict",
]
