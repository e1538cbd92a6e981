"""A LLaMA (or a GPT-2): token embedding -> blocks -> final norm -> head, with composable attention.

The attention variant, position encoding, MLP kind, norm kind and placement, biases and weight tying all
come from `Config`; there is exactly one model class. Initialisation follows the paper's code
(TinyLlama): every Linear and Embedding N(0, sqrt(2 / (5 n_embd))) with zero biases, the MLP output
projection N(0, 1 / sqrt(d_ff) / n_layer), norms weight 1 and bias 0. It is bound to each module's
`reset_parameters`, so it also runs when a model created on the meta device is materialised (`to_empty`
then `init_weights`, where an init pass at construction would do nothing).

Tied embeddings (`tie_embeddings`) are one parameter, `wte.weight`, used by the lookup and by the head;
there is no `lm_head` module then. Two modules sharing one `nn.Parameter` would come apart silently
wherever torch replaces parameters module by module (`to_empty` of a meta-device model, FSDP's
materialisation, `load_state_dict(assign=True)`), so the sharing is never set up in the first place.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from lit_gpt.model.attention import AttentionRuntime, CausalSelfAttention, KVCache
from lit_gpt.model.config import Config, ConfigError
from lit_gpt.model.mlp import MLP
from lit_gpt.model.positions import ALiBi, RelativeBias, RopeScaling, rope_cos_sin, sinusoidal


def make_norm(config: Config) -> nn.Module:
    """The norm `config.norm_class` names; LayerNorm carries a bias, as GPT-2's does."""
    if config.norm_class == "layernorm":
        return nn.LayerNorm(config.n_embd, eps=config.norm_eps)
    return nn.RMSNorm(config.n_embd, eps=config.norm_eps)


class Block(nn.Module):
    """Attention and MLP, each with a residual connection, normalised before (pre) or after (post).

    With `mlp: none` the block is attention alone (its residual and one norm): the attention-only
    transformer of toy studies, with no second norm left unused.
    """

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.post_norm = config.norm_position == "post"
        self.norm_1 = make_norm(config)
        self.attn = CausalSelfAttention(config)
        has_mlp = config.mlp != "none"
        self.norm_2 = make_norm(config) if has_mlp else None
        self.mlp = MLP(config.n_embd, config.intermediate_size, config.mlp, config.bias) if has_mlp else None

    def forward(self, x, positions, rope=None, position_bias=None, cache=None, need_weights=False):
        if self.post_norm:
            attended, weights = self.attn(x, positions, rope, position_bias, cache, need_weights)
            x = self.norm_1(x + attended)
            if self.mlp is not None and self.norm_2 is not None:
                x = self.norm_2(x + self.mlp(x))
            return x, weights
        attended, weights = self.attn(self.norm_1(x), positions, rope, position_bias, cache, need_weights)
        x = x + attended
        if self.mlp is not None and self.norm_2 is not None:
            x = x + self.mlp(self.norm_2(x))
        return x, weights


def _normal_init(module: Union[nn.Linear, nn.Embedding], std: float) -> None:
    nn.init.normal_(module.weight, mean=0.0, std=std)
    bias = getattr(module, "bias", None)
    if bias is not None:
        nn.init.zeros_(bias)


class GPT(nn.Module):
    """`model(idx)` -> logits (B, T, padded_vocab_size); `model(idx, return_attention=True)` -> (logits, maps).

    Each map is (B, H, T, S + T_keys) for one layer: rows are the real-token queries, columns are
    [key slots..., sink tokens..., real tokens], values are the coefficients applied to the values.
    Learned sink tokens are prepended inside the model and never appear in the logits (so never in
    the loss). Pass a `KVCache` (see `new_cache`) to decode incrementally. `runtime` picks the attention
    backend; it changes speed and memory, never the function, so it is not part of the config.
    """

    def __init__(self, config: Config, runtime: AttentionRuntime = AttentionRuntime()) -> None:
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.padded_vocab_size, config.n_embd)
        self.sink_tokens = nn.Parameter(torch.empty(config.sink_tokens, config.n_embd)) if config.sink_tokens else None
        n_positions = config.block_size + config.sink_tokens
        self.wpe = nn.Embedding(n_positions, config.n_embd) if config.pos_embedding == "learnable" else None
        self.position_bias = {
            "alibi": lambda: ALiBi(config.n_head),
            "relative": lambda: RelativeBias(config.n_head, config.relative_buckets, config.relative_max_distance),
        }.get(config.pos_embedding, lambda: None)()
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.norm = make_norm(config)
        self.lm_head = None if config.tie_embeddings else nn.Linear(config.n_embd, config.padded_vocab_size, bias=False)
        self.set_attention_runtime(runtime)
        self._bind_init()
        if self.wte.weight.device.type != "meta":
            self.init_weights()

    def set_attention_runtime(self, runtime: AttentionRuntime) -> None:
        """Run every attention layer with `runtime` from the next forward on (e.g. evaluate with another backend)."""
        for module in self.modules():
            if isinstance(module, CausalSelfAttention):
                module.set_runtime(runtime)

    # ------------------------------------------------------------------------------ init
    @property
    def init_std(self) -> float:
        return math.sqrt(2.0 / 5 / self.config.n_embd)

    def _bind_init(self) -> None:
        """Make every Linear/Embedding's `reset_parameters` apply the paper's init (also on meta-device models)."""
        out_std = 1 / math.sqrt(self.config.intermediate_size) / self.config.n_layer
        for name, module in self.named_modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                std = out_std if name.endswith("mlp.down_proj") else self.init_std
                module.reset_parameters = partial(_normal_init, module, std)  # type: ignore[method-assign]

    def reset_parameters(self) -> None:
        """Initialise the parameters this module owns directly (the sink-token embeddings)."""
        if self.sink_tokens is not None:
            nn.init.normal_(self.sink_tokens, std=self.init_std)

    def init_weights(self) -> None:
        """Apply the init to every parameter, e.g. after `to_empty()` of a meta-device model."""
        for module in self.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()

    # ------------------------------------------------------------------------------ forward
    def new_cache(self, positions_in_cache: bool = False) -> KVCache:
        """An empty cache: absolute positions (generation) or StreamingLLM's in-cache ones (see `KVCache`)."""
        return KVCache(self.config.n_layer, positions_in_cache)

    def forward(self, idx: torch.Tensor, return_attention: bool = False, cache: Optional[KVCache] = None):
        cfg = self.config
        batch, length = idx.shape
        start = cache.next_pos if cache is not None else 0
        if cache is None and length > cfg.block_size:
            raise ConfigError(f"sequence of {length} tokens exceeds block_size={cfg.block_size}")
        x = self.wte(idx)
        n_sink = cfg.sink_tokens if start == 0 else 0
        if n_sink:
            assert self.sink_tokens is not None  # built when the config has sink tokens
            x = torch.cat((self.sink_tokens.to(x.dtype).expand(batch, -1, -1), x), dim=1)
        positions = torch.arange(start, start + x.shape[1], device=idx.device)
        if cfg.pos_embedding == "absolute":
            x = x + sinusoidal(positions, cfg.n_embd).to(x.dtype)
        elif cfg.pos_embedding == "learnable":
            assert self.wpe is not None  # built for learnable positions
            if positions[-1] >= self.wpe.num_embeddings:
                raise ConfigError(f"position {int(positions[-1])} exceeds the learnable table; raise block_size")
            x = x + self.wpe(positions)
        rope = None
        if cfg.pos_embedding == "rope":
            rope = rope_cos_sin(positions, cfg.head_size, cfg.rope_base, x.dtype, RopeScaling.from_config(cfg))
        maps = []
        for i, block in enumerate(self.blocks):
            layer_cache = cache.layers[i] if cache is not None else None
            x, weights = block(x, positions, rope, self.position_bias, layer_cache, return_attention)
            if return_attention:
                maps.append(weights[:, :, n_sink:])
        if cache is not None:
            cache.next_pos = start + x.shape[1]
        logits = self.head(self.norm(x[:, n_sink:]))
        return (logits, maps) if return_attention else logits

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of final hidden states: the LM head, or the token embedding matrix when tied."""
        return F.linear(x, self.wte.weight) if self.lm_head is None else self.lm_head(x)
