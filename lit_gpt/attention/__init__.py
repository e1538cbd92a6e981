"""The attention zoo: a variant is a composition of a score, a weight function, a normaliser, a mask,
extra key slots and an output gate (see `Config`); backends compute it interchangeably."""

from lit_gpt.attention.backends import AttentionProblem, AttentionSpec, choose_backend, eager
from lit_gpt.attention.cache import KVCache, LayerCache
from lit_gpt.attention.layer import CausalSelfAttention
from lit_gpt.attention.masks import MaskSpec

__all__ = ["AttentionProblem", "AttentionSpec", "CausalSelfAttention", "KVCache", "LayerCache", "MaskSpec",
           "choose_backend", "eager"]
