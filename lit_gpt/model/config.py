"""Model configuration: one dataclass plus a registry of named presets.

Every attention variant of the study is a combination of flat fields on `Config`, so a YAML file or a
command-line override can select it without touching code. `Config.validate` rejects combinations
that would be meaningless (for example a zero-value slot with an unnormalised weight function, where
it can have no effect) instead of silently running something else.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields
from typing import Any

from lit_gpt.core.errors import UserError

CHOICES: dict[str, tuple[str, ...]] = {
    "attn_score": ("softmax", "sigmoid", "elu", "linear"),
    "attn_kernel": ("none", "linear", "elu", "mlp"),
    "attn_normalize": ("sum", "none", "max_abs"),
    "attn_gate": ("none", "headwise", "elementwise"),
    "pos_embedding": ("rope", "nope", "absolute", "learnable", "alibi", "relative"),
    "mlp": ("swiglu", "relu", "gelu", "gelu_tanh", "swish", "reglu", "geglu", "none"),
    "norm_class": ("rmsnorm", "layernorm"),
    "norm_position": ("pre", "post"),
    "rope_scaling": ("default", "linear", "llama3"),
}


# Former fields that are now run-time settings (`lit_gpt.model.attention.AttentionRuntime`), dropped when read.
RUNTIME_KEYS = ("attn_backend", "attn_chunk_size")

# Sizes and constants that only make sense above zero (None = derived later).
POSITIVE_FIELDS = (
    "block_size",
    "vocab_size",
    "padding_multiple",
    "padded_vocab_size",
    "n_layer",
    "n_head",
    "n_embd",
    "head_size",
    "n_query_groups",
    "intermediate_size",
    "norm_eps",
    "rope_base",
    "rope_scaling_factor",
    "rope_low_freq_factor",
    "rope_high_freq_factor",
    "rope_original_max_seq_len",
    "relative_buckets",
    "relative_max_distance",
)


class ConfigError(UserError, ValueError):
    """A configuration value or combination that cannot be built; the message says how to fix it."""


# What makes a model a GPT-2 (Radford et al. 2019) rather than a LLaMA, on top of any size: LayerNorm,
# learned absolute positions, tanh-approximated GELU, biases in every projection, tied embeddings.
GPT2_STRUCTURE: dict[str, Any] = dict(
    norm_class="layernorm", pos_embedding="learnable", mlp="gelu_tanh", bias=True, tie_embeddings=True
)


@dataclass
class Config:
    """Shape and variant of a LLaMA-style model (or, with `GPT2_STRUCTURE`, a GPT-2).

    Field docstrings (the string literal under each field) are shown as CLI help by jsonargparse.
    """

    name: str = "custom"
    """Preset name this config came from (informational)."""
    block_size: int = 2048
    """Maximum number of real tokens in a sequence (sink tokens come on top)."""
    vocab_size: int = 50277
    """Tokenizer vocabulary size."""
    padding_multiple: int = 64
    """The embedding table is padded to a multiple of this, for faster matmuls."""
    padded_vocab_size: int = None  # type: ignore[assignment]  # derived in __post_init__ when None
    """Embedding rows; derived from `vocab_size` and `padding_multiple` when left empty."""
    n_layer: int = 10
    """Number of transformer blocks."""
    n_head: int = 8
    """Number of query heads."""
    n_embd: int = 768
    """Width of the residual stream."""
    head_size: int = None  # type: ignore[assignment]  # derived in __post_init__ when None
    """Per-head width; `n_embd // n_head` when left empty."""
    n_query_groups: int = None  # type: ignore[assignment]  # derived in __post_init__ when None
    """Number of key/value heads (grouped-query attention); `n_head` when left empty."""
    intermediate_size: int = 1536
    """Hidden width of the MLP (unused with `mlp: none`)."""
    norm_class: str = "rmsnorm"
    """`rmsnorm` (LLaMA) or `layernorm` (GPT-2: mean-centred, with a learned bias)."""
    norm_eps: float = 1e-5
    """Epsilon of every norm (RMSNorm or LayerNorm)."""
    norm_position: str = "pre"
    """`pre` (LLaMA) or `post` (original Transformer) layer norm placement."""
    bias: bool = False
    """Bias vectors in the attention's q/k/v and output projections and in the MLP's linears (GPT-2). Not
    the learned attention-bias slots, which are `k_bias` / `v_bias`."""
    tie_embeddings: bool = False
    """The output head is the token embedding matrix (GPT-2) instead of a matrix of its own."""
    pos_embedding: str = "rope"
    """`rope | nope | absolute | learnable | alibi | relative` (relative = T5 buckets, learned bias)."""
    rope_base: float = 10000.0
    """RoPE frequency base (HF `rope_theta`)."""
    rope_scaling: str = "default"
    """RoPE frequency scaling for long contexts, as HF LLaMAs use it: `default` (none), `linear` (every
    frequency divided by `rope_scaling_factor`) or `llama3` (low frequencies divided, high ones kept,
    smooth in between)."""
    rope_scaling_factor: float = 1.0
    """Scaling factor of `linear` and `llama3` RoPE scaling."""
    rope_low_freq_factor: float = 1.0
    """`llama3`: wavelengths above original_max_seq_len / this are divided by the factor."""
    rope_high_freq_factor: float = 4.0
    """`llama3`: wavelengths below original_max_seq_len / this are kept."""
    rope_original_max_seq_len: int = 8192
    """`llama3`: the context length the model was pretrained with."""
    relative_buckets: int = 32
    """Number of T5 relative-position buckets."""
    relative_max_distance: int = 128
    """Distance beyond which T5 buckets saturate."""
    mlp: str = "swiglu"
    """`swiglu | relu | gelu | gelu_tanh | swish | reglu | geglu | none`; `gelu` is the exact GELU, `gelu_tanh`
    its tanh approximation (GPT-2's); `none` leaves the MLP (and its norm) out of every block, making an
    attention-only transformer."""

    attn_score: str = "softmax"
    """Weight function on s = q.k/sqrt(d): `softmax` (exp), `sigmoid`, `elu` (elu(s)+1), `linear` (s)."""
    attn_kernel: str = "none"
    """Feature map phi on q and k after RoPE: `none`, `linear` (identity), `elu` (elu+1), `mlp`
    (per-layer 2-layer ReLU MLP); weights are then phi(q).phi(k)/sqrt(d) (requires attn_score=linear)."""
    attn_normalize: str = "sum"
    """Row normaliser: `sum` (divide by the row sum), `none`, `max_abs` (divide by max(|sum|, 1))."""
    window_size: int = 0
    """Sliding window W: query i sees keys i-W+1..i. 0 disables it."""
    prefix_tokens: int = 0
    """Prefix LM: the first P tokens see each other bidirectionally and every query sees them. 0 = off."""
    k_bias: bool = False
    """Learned key slot k* (after RoPE) that every query can attend to."""
    v_bias: bool = False
    """Learned value v*: the slot's value with `k_bias`, otherwise added to every head's output."""
    head_bias: bool = False
    """k*/v* per head (n_head, head_size) instead of shared across heads (head_size,)."""
    softmax_off_by_one: bool = False
    """Add a zero key/value slot: exp(x_i) / (1 + sum_j exp(x_j))."""
    sink_logit: bool = False
    """Learned per-head logit as an extra slot with zero value (gpt-oss style)."""
    sink_tokens: int = 0
    """Number of learned embeddings prepended to every input; excluded from loss and logits."""
    attn_gate: str = "none"
    """Output gate sigmoid(x W_g) on each head's output: `none`, `headwise`, `elementwise`."""
    kernel_hidden: int = 0
    """Hidden width of the `mlp` feature map; `head_size` when 0."""

    def __post_init__(self) -> None:
        self._check_sizes()
        if self.head_size is None:
            if self.n_embd % self.n_head:
                raise ConfigError(f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}; set head_size")
            self.head_size = self.n_embd // self.n_head
        if self.n_query_groups is None:
            self.n_query_groups = self.n_head
        if self.padded_vocab_size is None:
            self.padded_vocab_size = _round_up(self.vocab_size, self.padding_multiple)
        self.validate()

    # ------------------------------------------------------------------ validation
    def _check_sizes(self) -> None:
        """Sizes are checked before anything is derived from them (n_embd // n_head with n_head = 0 would
        fail inside Python, not with a message naming the field)."""
        for key in POSITIVE_FIELDS:
            value = getattr(self, key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
                raise ConfigError(f"{key} must be a positive number, got {value!r}")

    def validate(self) -> None:
        """Raise `ConfigError` for unknown choices and combinations that cannot mean what they say."""
        for key, allowed in CHOICES.items():
            value = getattr(self, key)
            if value not in allowed:
                raise ConfigError(f"{key}={value!r} is not one of {', '.join(allowed)}")
        if self.n_query_groups < 1 or self.n_head % self.n_query_groups:
            raise ConfigError(f"n_head={self.n_head} must be a multiple of n_query_groups={self.n_query_groups}")
        if self.padded_vocab_size < self.vocab_size:
            raise ConfigError(
                f"padded_vocab_size={self.padded_vocab_size} is smaller than vocab_size={self.vocab_size}"
            )
        if self.pos_embedding == "rope" and self.head_size % 2:
            raise ConfigError(f"rope needs an even head_size, got {self.head_size}")
        if self.rope_scaling != "default" and self.pos_embedding != "rope":
            raise ConfigError(f"rope_scaling={self.rope_scaling} scales RoPE; it needs pos_embedding=rope")
        if self.rope_scaling == "llama3" and self.rope_high_freq_factor <= self.rope_low_freq_factor:
            raise ConfigError(
                f"llama3 RoPE scaling needs rope_high_freq_factor > rope_low_freq_factor, got "
                f"{self.rope_high_freq_factor} <= {self.rope_low_freq_factor}"
            )
        self._check_sizes()
        for key in ("window_size", "prefix_tokens", "sink_tokens", "kernel_hidden"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{key} must be >= 0, got {getattr(self, key)}")
        if self.attn_kernel != "none" and self.attn_score != "linear":
            raise ConfigError(
                f"attn_kernel={self.attn_kernel} computes weights phi(q).phi(k)/sqrt(d) itself; "
                f"set attn_score=linear (got {self.attn_score})"
            )
        if self.attn_score == "softmax" and self.attn_normalize != "sum":
            raise ConfigError(
                "attn_score=softmax is exp normalised by the row sum; use attn_normalize=sum "
                "(for unnormalised weights pick sigmoid, elu or linear)"
            )
        zero_value_slots = [k for k in ("softmax_off_by_one", "sink_logit") if getattr(self, k)]
        if self.k_bias and not self.v_bias:
            zero_value_slots.append("k_bias without v_bias")
        if zero_value_slots and self.attn_normalize != "sum":
            raise ConfigError(
                f"{', '.join(zero_value_slots)} adds a zero-value slot, which only changes anything "
                f"through row normalisation; use attn_normalize=sum (got {self.attn_normalize})"
            )
        if self.softmax_off_by_one and self.attn_score != "softmax":
            raise ConfigError("softmax_off_by_one needs attn_score=softmax (it is a zero key/value slot in softmax)")
        if self.head_bias and not (self.k_bias or self.v_bias):
            raise ConfigError("head_bias makes k*/v* per head; enable k_bias and/or v_bias too")

    # ------------------------------------------------------------------ derived
    @property
    def n_slots(self) -> int:
        """Extra key columns every query sees before the real keys (k*, off-by-one zero, sink logit)."""
        return int(self.k_bias) + int(self.softmax_off_by_one) + int(self.sink_logit)

    def variant_summary(self) -> str:
        """Short human-readable description of the attention variant, for reports."""
        parts = [
            self.attn_score if self.attn_kernel == "none" else f"kernel:{self.attn_kernel}",
            f"norm:{self.attn_normalize}",
        ]
        for key in ("window_size", "prefix_tokens", "sink_tokens"):
            if getattr(self, key):
                parts.append(f"{key.split('_')[0]}:{getattr(self, key)}")
        for key in ("k_bias", "v_bias", "softmax_off_by_one", "sink_logit"):
            if getattr(self, key):
                parts.append(key + ("/head" if self.head_bias and key in ("k_bias", "v_bias") else ""))
        if self.attn_gate != "none":
            parts.append(f"gate:{self.attn_gate}")
        if self.pos_embedding != "rope":
            parts.append(f"pos:{self.pos_embedding}")
        if self.rope_scaling != "default":
            parts.append(f"rope:{self.rope_scaling}x{self.rope_scaling_factor:g}")
        if self.mlp != "swiglu":
            parts.append(f"mlp:{self.mlp}")
        if self.norm_position != "pre":
            parts.append("post-norm")
        if self.norm_class != "rmsnorm":
            parts.append(self.norm_class)
        if self.bias:
            parts.append("bias")
        if self.tie_embeddings:
            parts.append("tied")
        return " ".join(parts)

    # ------------------------------------------------------------------ construction
    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> "Config":
        """Build a named preset, with any field overridden by keyword."""
        if name not in PRESETS:
            raise ConfigError(f"unknown model preset {name!r}; valid presets: {', '.join(sorted(PRESETS))}")
        values = dict(PRESETS[name])
        values.update(overrides)
        values["name"] = name
        return cls.from_dict(values)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "Config":
        """Build from a plain dict (YAML, overrides); unknown keys are an error listing the valid ones."""
        moved = sorted(set(values) & set(RUNTIME_KEYS))
        if moved:
            raise ConfigError(
                f"{', '.join(moved)} is a run-time setting, not part of the model: pass "
                f"AttentionRuntime(...) to GPT, or --attn_backend / --attn_chunk_size to a run"
            )
        unknown = sorted(set(values) - set(cls.field_names()))
        if unknown:
            raise ConfigError(
                f"unknown config field(s) {', '.join(unknown)}; valid fields: {', '.join(cls.field_names())}"
            )
        return cls(**values)

    @classmethod
    def from_saved(cls, values: dict[str, Any]) -> "Config":
        """Build from the config a checkpoint stores. Checkpoints saved before the attention backend became a
        run-time setting (`AttentionRuntime`) still carry it; it never changed the function, so it is
        dropped here rather than refused."""
        return cls.from_dict({k: v for k, v in values.items() if k not in RUNTIME_KEYS})

    def asdict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **overrides: Any) -> "Config":
        """A copy with some fields changed; derived fields follow their inputs unless given.

        `padded_vocab_size` is recomputed whenever the vocabulary changes; `head_size` and
        `n_query_groups` are recomputed when they still hold their derived value (n_embd // n_head,
        n_head), so `replace(n_head=2)` stays multi-head attention of the same width.
        """
        values = self.asdict()
        follows = {
            "padded_vocab_size": ("vocab_size" in overrides or "padding_multiple" in overrides),
            "head_size": ("n_embd" in overrides or "n_head" in overrides)
            and self.head_size == self.n_embd // self.n_head,
            "n_query_groups": "n_head" in overrides and self.n_query_groups == self.n_head,
        }
        for derived, recompute in follows.items():
            if recompute and derived not in overrides:
                values[derived] = None
        values.update(overrides)
        return Config.from_dict(values)


def _round_up(n: int, multiple: int) -> int:
    return int(math.ceil(n / multiple) * multiple) if multiple > 1 else n


PRESETS: dict[str, dict[str, Any]] = {
    # The paper's 60M model (upstream "tiny_LLaMA_60M"): GPT-NeoX tokenizer, head size 96.
    "tinyllama_60M": dict(
        block_size=2048,
        vocab_size=50277,
        padded_vocab_size=50432,
        n_layer=10,
        n_head=8,
        n_embd=768,
        intermediate_size=1536,
    ),
    # The paper's 1B model (TinyLlama 1.1B shape; the paper trains it with full multi-head attention).
    "tinyllama_1_1b": dict(
        block_size=2048,
        vocab_size=50277,
        padded_vocab_size=50432,
        n_layer=22,
        n_head=16,
        n_embd=2048,
        intermediate_size=5632,
    ),
    # CPU scale for the embedded default: the CPU benchmark shape (docs/reference.md), ~1.3M parameters.
    "tiny": dict(
        block_size=256, vocab_size=512, padding_multiple=64, n_layer=6, n_head=4, n_embd=128, intermediate_size=340
    ),
    # GPT-2 small (124M; HF `gpt2`): its 50257-entry vocabulary padded to 50304 rows.
    "gpt2_small": dict(
        block_size=1024,
        vocab_size=50257,
        padding_multiple=64,
        n_layer=12,
        n_head=12,
        n_embd=768,
        intermediate_size=3072,
        norm_eps=1e-5,
        **GPT2_STRUCTURE,
    ),
    # The GPT-2 structure at the `tiny` preset's size (its 4 x n_embd MLP), for the cpu scale.
    "gpt2_tiny": dict(
        block_size=256,
        vocab_size=512,
        padding_multiple=64,
        n_layer=6,
        n_head=4,
        n_embd=128,
        intermediate_size=512,
        norm_eps=1e-5,
        **GPT2_STRUCTURE,
    ),
    # For tests: well under 200k parameters, still every structural feature (several layers and heads).
    "micro": dict(
        block_size=64, vocab_size=128, padding_multiple=64, n_layer=2, n_head=4, n_embd=32, intermediate_size=88
    ),
}

# Upstream spellings, so configs and scripts written for the original code keep working.
PRESETS["tiny_LLaMA_60M"] = PRESETS["tinyllama_60M"]
PRESETS["tiny_LLaMA_1b"] = PRESETS["tinyllama_1_1b"]

__all__ = ["CHOICES", "Config", "ConfigError", "GPT2_STRUCTURE", "PRESETS"]
