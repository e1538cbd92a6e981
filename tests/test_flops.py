import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from variants import micro, tokens

from lit_gpt.model.attention import AttentionRuntime
from lit_gpt.model.config import GPT2_STRUCTURE, Config
from lit_gpt.model.flops import estimated_flops_per_step, flops_per_token, num_parameters
from lit_gpt.model.gpt import GPT
from lit_gpt.model.variants import VARIANTS


def test_tiny_preset_matches_the_reference_figures():
    config = Config.from_name("tiny")
    counts = num_parameters(config)
    assert counts["total"] == sum(p.numel() for p in GPT(config).parameters())
    assert round(counts["total"] / 1e6, 2) == 1.31
    assert counts["non_embedding"] == counts["total"] - 2 * config.padded_vocab_size * config.n_embd
    assert estimated_flops_per_step(config, 32, 256) / 1e9 == pytest.approx(80, rel=0.02)


def test_non_embedding_count_is_what_model_names_mean():
    assert round(num_parameters(Config.from_name("tinyllama_60M"))["non_embedding"] / 1e6, 1) == 59.0


def test_gpt2_small_is_gpt2_124m_with_the_vocabulary_padded():
    config = Config.from_name("gpt2_small")
    counts = num_parameters(config)
    with torch.device("meta"):
        assert counts["total"] == sum(p.numel() for p in GPT(config).parameters())
    # HF `gpt2`: 124,439,808 parameters with 50257 embedding rows; padding adds 47 rows of 768
    assert counts["total"] == 124_439_808 + (50304 - 50257) * 768
    assert round(counts["non_embedding"] / 1e6, 1) == 85.1


@pytest.mark.parametrize("overrides", VARIANTS.values(), ids=VARIANTS.keys())
def test_parameter_count_matches_the_built_model(overrides):
    config = micro(**overrides)
    assert num_parameters(config)["total"] == sum(p.numel() for p in GPT(config).parameters())


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        dict(sink_tokens=2, k_bias=True, v_bias=True, n_query_groups=2, attn_gate="elementwise", mlp="gelu"),
        dict(GPT2_STRUCTURE, sink_tokens=1),
        dict(mlp="none", attn_gate="headwise"),
    ],
    ids=["llama", "everything", "gpt2", "attention_only"],
)
def test_formula_matches_torch_flop_counter(overrides):
    """The analytic count equals torch's count of matmul FLOPs for a real forward + backward.

    Eager attention, because the flop counter does not see inside SDPA's CPU kernel; eager computes the
    full (masked) score block, which is what the formula counts.
    """
    config = micro(**overrides)
    model, idx = GPT(config, AttentionRuntime("eager")), tokens(batch=2, length=16)
    with FlopCounterMode(display=False) as counter:
        model(idx).sum().backward()
    assert counter.get_total_flops() == pytest.approx(estimated_flops_per_step(config, 2, 16), rel=1e-9)


@pytest.mark.parametrize(
    "overrides",
    [dict(mlp="none"), dict(GPT2_STRUCTURE, mlp="none"), dict(mlp="none", norm_position="post", attn_gate="headwise")],
)
def test_attention_only_blocks_count_no_mlp_and_one_norm(overrides):
    config = micro(**overrides)
    assert num_parameters(config)["total"] == sum(p.numel() for p in GPT(config).parameters())
    with_mlp = micro(**{**overrides, "mlp": "relu"})
    plain_mlp_weights = 2 * config.n_embd * config.intermediate_size  # up and down
    assert flops_per_token(with_mlp, 16) - flops_per_token(config, 16) == 6 * plain_mlp_weights * config.n_layer


def test_flops_grow_linearly_in_attention_with_sequence_length():
    config = Config.from_name("tinyllama_60M")
    attention_per_token = 12 * config.n_layer * config.n_head * config.head_size
    assert flops_per_token(config, 2048) - flops_per_token(config, 1024) == attention_per_token * 1024
