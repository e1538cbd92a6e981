"""Parameter counts and training FLOPs of a `Config`, for model-FLOPs utilisation (MFU).

Training FLOPs per token (forward + backward), following Kaplan et al. / PaLM (appendix B):

    6 * N_matmul  +  12 * n_layer * n_head * head_size * T_keys

* `N_matmul` counts every weight used in a matrix multiply once per token: attention projections,
  MLP, output gate, kernel feature map (applied to each query head and key group) and the LM head. The
  embedding lookups are not matmuls and are left out. A matmul costs 2 FLOPs per weight forward and
  4 backward (gradients of input and weight): 6 per weight.
* Attention scores q.k and the weighted sum of values cost 2 * 2 * head_size FLOPs per (query, key)
  pair and head forward, twice that backward: 12 * head_size per pair, with `T_keys` = key slots +
  sink tokens + T keys per query. Causal masking is *not* halved: eager and SDPA with an explicit
  mask compute the full block and only flash-style kernels skip it, and the uncounted half keeps the
  figure comparable with PaLM-style MFU reported by other libraries (and with docs/reference.md's 80 GFLOP
  for the `tiny` preset). Sliding windows are not discounted for the same reason.
* Learned sink tokens are processed by every block like real tokens but never reach the LM head.

Norms, biases, activations, softmax and RoPE are elementwise and ignored (well under 1% at these shapes).
A tied head (`tie_embeddings`) is still a matmul: its weights count in FLOPs, once in parameters.
"""

from __future__ import annotations

from lit_gpt.model.config import Config
from lit_gpt.model.mlp import GATED


def mlp_linears(config: Config) -> int:
    """Linear layers of each block's MLP: 3 gated (gate, up, down), 2 plain, 0 with `mlp: none`."""
    if config.mlp == "none":
        return 0
    return 3 if config.mlp in GATED else 2


def block_matmul_params(config: Config) -> int:
    """Weights one transformer block multiplies each token by."""
    c = config
    attn = c.n_embd * (c.n_head + 2 * c.n_query_groups) * c.head_size + c.n_head * c.head_size * c.n_embd
    mlp = mlp_linears(c) * c.n_embd * c.intermediate_size
    gate = {"none": 0, "headwise": c.n_embd * c.n_head, "elementwise": c.n_embd * c.n_head * c.head_size}[c.attn_gate]
    kernel = 0
    if c.attn_kernel == "mlp":
        kernel = (c.n_head + c.n_query_groups) * 2 * c.head_size * (c.kernel_hidden or c.head_size)
    return attn + mlp + gate + kernel


def num_parameters(config: Config) -> dict[str, int]:
    """{"total", "non_embedding"}: the model's parameter count, with and without the vocabulary matrices.

    `non_embedding` (Kaplan et al.'s N) leaves out the token embedding, the LM head (the same matrix when
    tied), learnable positions and sink tokens; it is the figure model names use (tinyllama_60M: 59.0M,
    gpt2_small: 85.1M, GPT-2's "124M" being the total with its unpadded vocabulary).
    """
    c = config
    norm = 2 * c.n_embd if c.norm_class == "layernorm" else c.n_embd  # gain, and LayerNorm's bias
    qkv_width = (c.n_head + 2 * c.n_query_groups) * c.head_size
    linears = mlp_linears(c)
    norms = 2 if linears else 1  # before attention, and before the MLP when there is one
    per_block = c.n_embd * qkv_width + c.n_head * c.head_size * c.n_embd + norms * norm
    per_block += linears * c.n_embd * c.intermediate_size
    if c.bias:  # q/k/v, attention output
        per_block += qkv_width + c.n_embd
    if c.bias and linears:  # MLP up (and gate), MLP down
        per_block += (linears - 1) * c.intermediate_size + c.n_embd
    per_block += {"none": 0, "headwise": c.n_head, "elementwise": c.n_head * c.head_size}[c.attn_gate] * c.n_embd
    if c.attn_kernel == "mlp":
        per_block += 2 * c.head_size * (c.kernel_hidden or c.head_size)
    slot_rows = c.n_head if c.head_bias else 1
    per_block += (int(c.k_bias) + int(c.v_bias)) * slot_rows * c.head_size + (c.n_head if c.sink_logit else 0)
    shared = norm  # final norm
    if c.pos_embedding == "relative":
        shared += c.relative_buckets * c.n_head
    vocab_matrices = 1 if c.tie_embeddings else 2  # token embedding, LM head
    embedding = vocab_matrices * c.padded_vocab_size * c.n_embd + c.sink_tokens * c.n_embd
    if c.pos_embedding == "learnable":
        embedding += (c.block_size + c.sink_tokens) * c.n_embd
    non_embedding = c.n_layer * per_block + shared
    return {"total": non_embedding + embedding, "non_embedding": non_embedding}


def flops_per_token(config: Config, block_size: int) -> float:
    """Training FLOPs (forward + backward) per real token of a sequence of `block_size` tokens."""
    c = config
    positions = block_size + c.sink_tokens
    keys = c.n_slots + positions
    blocks = 6 * c.n_layer * block_matmul_params(c) + 12 * c.n_layer * c.n_head * c.head_size * keys
    head = 6 * c.n_embd * c.padded_vocab_size
    return blocks * positions / block_size + head


def estimated_flops_per_step(config: Config, micro_batch: int, block_size: int) -> float:
    """Training FLOPs of one forward + backward over a micro-batch of `micro_batch` x `block_size` tokens.

    Multiply by the gradient-accumulation steps for an optimizer step; divide by the measured time and
    the hardware peak for MFU.
    """
    return flops_per_token(config, block_size) * micro_batch * block_size
