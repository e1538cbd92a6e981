"""The attention zoo: a variant is a composition of a score, a weight function, a normaliser, a mask,
extra key slots and an output gate (see `Config`); backends compute it interchangeably, and an
`AttentionRuntime` chooses among them without changing what is computed."""

from lit_gpt.model.attention.backends import AttentionProblem, AttentionSpec, Backend, Eager
from lit_gpt.model.attention.cache import KVCache, LayerCache
from lit_gpt.model.attention.layer import CausalSelfAttention
from lit_gpt.model.attention.masks import MaskSpec
from lit_gpt.model.attention.runtime import AttentionRuntime

__all__ = [
    "AttentionProblem",
    "AttentionRuntime",
    "AttentionSpec",
    "Backend",
    "CausalSelfAttention",
    "Eager",
    "KVCache",
    "LayerCache",
    "MaskSpec",
]
