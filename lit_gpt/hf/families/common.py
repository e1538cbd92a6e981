"""What every family's mapping shares: the attention a HF model computes, refusals naming the fields, and
the check that a HF state dict holds exactly the tensors a config needs."""

from __future__ import annotations

from typing import Any, Iterable

import torch

from lit_gpt.model.config import Config, ConfigError

# Plain softmax attention over the causal mask, without the study's key slots, sink tokens or gates: what
# every HF family here computes, with the reason being the family's own position encoding and blocks.
PLAIN_ATTENTION: dict[str, Any] = {
    "attn_score": "softmax",
    "attn_kernel": "none",
    "attn_normalize": "sum",
    "window_size": 0,
    "prefix_tokens": 0,
    "k_bias": False,
    "v_bias": False,
    "softmax_off_by_one": False,
    "sink_logit": False,
    "sink_tokens": 0,
    "attn_gate": "none",
}


def refuse_unless(
    config: Config, family: str, required: dict[str, Any], activations: dict[str, str], other: Iterable[str] = ()
) -> None:
    """Raise `ConfigError` naming every field in which `config` differs from `required`, an MLP kind the family
    has no HF activation for (`activations`: our kind -> HF name) and the `other` differences the caller
    found, so the user sees at once what keeps it from being a `family`."""
    differs = [
        f"{key}={getattr(config, key)!r} ({family}: {value!r})"
        for key, value in required.items()
        if getattr(config, key) != value
    ]
    if config.mlp not in activations:
        differs.append(f"mlp={config.mlp!r} ({family}: one of {', '.join(activations)})")
    differs += list(other)
    if differs:
        raise ConfigError(f"{config.variant_summary()} is not a {family}; differs in {', '.join(differs)}")


def number(value: Any, key: str, integer: bool = False) -> Any:
    """A numeric config.json value (float, or int when `integer`); anything else is a `ConfigError` naming it."""
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not numeric or (integer and not float(value).is_integer()):
        raise ConfigError(f"{key} must be {'an integer' if integer else 'a number'}, got {value!r}")
    return int(value) if integer else float(value)


def flag(hf: dict[str, Any], key: str, default: bool) -> bool:
    """A true/false config.json value (`default` when absent or null); anything else is a `ConfigError`."""
    value = hf.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    return value


def drop_tied_head(state_dict: dict[str, torch.Tensor], head: str, embedding: str) -> None:
    """Remove the head of a tied model from HF weights, which may carry it as a copy of the embedding; a head
    that differs would make the files two models at once, so it is refused rather than dropped."""
    if head not in state_dict:
        return
    if embedding in state_dict and not torch.equal(state_dict[head], state_dict[embedding]):
        raise ConfigError(
            f"{head} differs from {embedding} although tie_word_embeddings is set; set it to false "
            f"in config.json if the head is a matrix of its own"
        )
    del state_dict[head]


def check_shapes(state_dict: dict[str, torch.Tensor], expected: dict[str, tuple[int, ...]]) -> None:
    """Raise `ConfigError` unless `state_dict` holds exactly the tensors of `expected`, in those shapes:
    weights from another config must not load into part of the model, or be dropped."""
    unused = sorted(set(state_dict) - set(expected))
    if unused:
        raise ConfigError(f"HF weights our model has no place for: {', '.join(unused[:5])}")
    missing = sorted(set(expected) - set(state_dict))
    if missing:
        raise ConfigError(f"HF weights lack {len(missing)} tensors the config needs: {', '.join(missing[:3])}")
    wrong = [
        f"{name} {list(state_dict[name].shape)} (config: {list(shape)})"
        for name, shape in expected.items()
        if tuple(state_dict[name].shape) != shape
    ]
    if wrong:
        raise ConfigError(f"HF weights of other shapes than the config's: {', '.join(wrong[:3])}")


__all__ = ["PLAIN_ATTENTION", "check_shapes", "drop_tied_head", "flag", "number", "refuse_unless"]
