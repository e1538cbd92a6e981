"""The study's attention variants by name, as overrides of any preset's `Config` fields.

One list that the tests check every model-level property over (causality, training, KV cache, backend
parity) and that `bench/attention.py` times: adding a variant to the study means adding one line here.
"""

from __future__ import annotations

from typing import Any

from lit_gpt.model.config import GPT2_STRUCTURE

# Attention zoo: weight function x normaliser x kernel, masks, key slots, sink tokens, gates.
ATTENTION_VARIANTS: dict[str, dict[str, Any]] = {
    "softmax": {},
    "sigmoid": dict(attn_score="sigmoid", attn_normalize="none"),
    "sigmoid_sum": dict(attn_score="sigmoid"),
    "elu": dict(attn_score="elu", attn_normalize="none"),
    "elu_sum": dict(attn_score="elu"),
    "kernel_elu_sum": dict(attn_score="linear", attn_kernel="elu"),
    "kernel_linear": dict(attn_score="linear", attn_kernel="linear", attn_normalize="none"),
    "kernel_mlp_max_abs": dict(attn_score="linear", attn_kernel="mlp", attn_normalize="max_abs"),
    "kernel_mlp": dict(attn_score="linear", attn_kernel="mlp", attn_normalize="none"),
    "window": dict(window_size=5),
    "prefix": dict(prefix_tokens=4),
    "sigmoid_window": dict(attn_score="sigmoid", attn_normalize="none", window_size=5),
    "k_bias": dict(k_bias=True),
    "k_bias_head": dict(k_bias=True, head_bias=True),
    "kv_bias": dict(k_bias=True, v_bias=True),
    "kv_bias_head": dict(k_bias=True, v_bias=True, head_bias=True),
    "v_bias": dict(v_bias=True),
    "v_bias_head": dict(v_bias=True, head_bias=True),
    "sigmoid_kv_bias": dict(attn_score="sigmoid", attn_normalize="none", k_bias=True, v_bias=True),
    "off_by_one": dict(softmax_off_by_one=True),
    "sink_logit": dict(sink_logit=True),
    "sink_logit_kv_bias_window": dict(sink_logit=True, k_bias=True, v_bias=True, window_size=5),
    "sink_tokens": dict(sink_tokens=2),
    "sink_tokens_window": dict(sink_tokens=2, window_size=5),
    "sink_tokens_prefix_kv_bias": dict(sink_tokens=1, prefix_tokens=3, k_bias=True, v_bias=True),
    "gate_headwise": dict(attn_gate="headwise"),
    "gate_elementwise": dict(attn_gate="elementwise"),
}

# Everything around attention: position encodings, MLP kinds, norms, grouped-query attention, and the
# GPT-2 structure with the two ways the massive-activation study removes its sink (a sink token, k*/v*).
MODEL_VARIANTS: dict[str, dict[str, Any]] = {
    "nope": dict(pos_embedding="nope"),
    "absolute": dict(pos_embedding="absolute"),
    "learnable": dict(pos_embedding="learnable"),
    "alibi": dict(pos_embedding="alibi"),
    "relative": dict(pos_embedding="relative", relative_buckets=8, relative_max_distance=16),
    "alibi_kv_bias_sigmoid": dict(pos_embedding="alibi", k_bias=True, v_bias=True, attn_score="sigmoid"),
    "relative_off_by_one": dict(pos_embedding="relative", softmax_off_by_one=True),
    "post_norm": dict(norm_position="post"),
    "gqa": dict(n_query_groups=2),
    "gqa_kv_bias_window": dict(n_query_groups=1, k_bias=True, v_bias=True, window_size=5),
    **{f"mlp_{kind}": dict(mlp=kind) for kind in ("relu", "gelu", "gelu_tanh", "swish", "reglu", "geglu")},
    "layernorm_post_norm": dict(norm_class="layernorm", norm_position="post"),
    "gpt2": GPT2_STRUCTURE,
    "gpt2_sink_token": dict(GPT2_STRUCTURE, sink_tokens=1),
    "gpt2_kv_bias_head": dict(GPT2_STRUCTURE, k_bias=True, v_bias=True, head_bias=True),
}

VARIANTS: dict[str, dict[str, Any]] = {**ATTENTION_VARIANTS, **MODEL_VARIANTS}


__all__ = ["ATTENTION_VARIANTS", "MODEL_VARIANTS", "VARIANTS"]
