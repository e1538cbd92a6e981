import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from variants import micro, tokens

from lit_gpt.model.attention import AttentionRuntime
from lit_gpt.model.attention.layer import KV_BIAS_STD, KeySlots
from lit_gpt.model.config import GPT2_STRUCTURE, ConfigError
from lit_gpt.model.gpt import GPT
from lit_gpt.model.mlp import MLP
from lit_gpt.model.positions import (
    ALiBi,
    RelativeBias,
    RopeScaling,
    alibi_slopes,
    apply_rope,
    relative_bucket,
    rope_cos_sin,
    sinusoidal,
)
from lit_gpt.model.variants import VARIANTS

ALL = pytest.mark.parametrize("overrides", VARIANTS.values(), ids=VARIANTS.keys())


def build(**overrides) -> GPT:
    torch.manual_seed(0)
    return GPT(micro(**overrides))


# ------------------------------------------------------------------------------------------ training
@ALL
def test_every_variant_trains_with_finite_decreasing_loss(overrides):
    model = build(**overrides)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    idx = tokens(batch=4, length=16)
    losses = []
    for _ in range(6):
        logits = model(idx[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1), idx[:, 1:].flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(math.isfinite(x) for x in losses)
    assert losses[-1] < losses[0] - 0.05, losses


# ------------------------------------------------------------------------------------------ causality
@ALL
@torch.no_grad()
def test_changing_a_future_token_does_not_change_earlier_logits(overrides):
    model = build(**overrides)
    idx = tokens(length=12)
    changed = idx.clone()
    changed[:, 8] = (changed[:, 8] + 1) % 128  # after any prefix (prefix tokens see each other)
    for backend in ("auto", "eager"):
        model.set_attention_runtime(AttentionRuntime(backend))
        a, b = model(idx), model(changed)
        torch.testing.assert_close(a[:, :8], b[:, :8], atol=1e-6, rtol=0)
        assert not torch.allclose(a[:, 8:], b[:, 8:])


@torch.no_grad()
def test_prefix_tokens_see_each_other():
    model = build(prefix_tokens=4)
    idx = tokens(length=8)
    changed = idx.clone()
    changed[:, 3] = (changed[:, 3] + 1) % 128
    assert not torch.allclose(model(idx)[:, 0], model(changed)[:, 0])


# ----------------------------------------------------------------------------------------- KV cache
@ALL
@torch.no_grad()
def test_incremental_decoding_equals_the_full_forward(overrides):
    model = build(**overrides).eval()
    idx = tokens(length=12)
    full = model(idx)
    cache = model.new_cache()
    steps = [model(idx[:, :5], cache=cache)] + [model(idx[:, t : t + 1], cache=cache) for t in range(5, 12)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=0)
    assert len(cache) == 12 + model.config.sink_tokens


# ----------------------------------------------------------------------------------------- attention maps
@ALL
@torch.no_grad()
def test_attention_maps_have_the_documented_layout(overrides):
    model = build(**overrides)
    config = model.config
    idx = tokens(length=10)
    logits, maps = model(idx, return_attention=True)
    torch.testing.assert_close(logits, model(idx), atol=1e-5, rtol=0)
    assert logits.shape == (2, 10, config.padded_vocab_size)  # sink tokens never reach the logits
    extra = config.n_slots + config.sink_tokens
    assert len(maps) == config.n_layer
    for weights in maps:
        assert weights.shape == (2, config.n_head, 10, extra + 10)
        real = weights[..., extra:]
        future = torch.ones(10, 10, dtype=torch.bool).triu(1)
        future[:, : config.prefix_tokens] = False
        assert torch.all(real[..., future] == 0)
        if config.attn_normalize == "sum":
            torch.testing.assert_close(weights.sum(-1), torch.ones(2, config.n_head, 10))


@torch.no_grad()
def test_slot_and_sink_token_columns_come_first():
    model = build(k_bias=True, v_bias=True, sink_tokens=2, window_size=3)
    _, maps = model(tokens(length=10), return_attention=True)
    weights = maps[0]
    assert torch.all(weights[..., 0] > 0)  # k* is visible to every query
    assert torch.all(weights[..., 1:3] > 0)  # sink tokens are visible outside the window
    assert torch.all(weights[:, :, 9, 3:10] == 0)  # real tokens 0..6 are outside query 9's window


# ------------------------------------------------------------------------------------------ init
INIT_CONFIG = dict(
    n_embd=64,
    n_head=4,
    n_layer=3,
    intermediate_size=256,
    k_bias=True,
    v_bias=True,
    head_bias=True,
    sink_tokens=4,
    sink_logit=True,
    attn_gate="elementwise",
    pos_embedding="relative",
)
INIT_CONFIGS = {"llama": INIT_CONFIG, "gpt2": {**INIT_CONFIG, **GPT2_STRUCTURE}}
INITS = pytest.mark.parametrize("init_config", INIT_CONFIGS.values(), ids=INIT_CONFIGS.keys())


def assert_paper_init(model: GPT) -> None:
    config = model.config
    linear_std = math.sqrt(2 / (5 * config.n_embd))
    down_std = 1 / math.sqrt(config.intermediate_size) / config.n_layer
    slots = [torch.cat([m.k_star.flatten(), m.v_star.flatten()]) for m in model.modules() if isinstance(m, KeySlots)]
    assert torch.cat(slots).std().item() == pytest.approx(KV_BIAS_STD, rel=0.1)
    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            expected = down_std if name.endswith("mlp.down_proj") else linear_std
            assert module.weight.std().item() == pytest.approx(expected, rel=0.15), name
            assert abs(module.weight.mean().item()) < expected / 5, name
            assert getattr(module, "bias", None) is None or torch.all(module.bias == 0), name
        elif isinstance(module, (nn.RMSNorm, nn.LayerNorm)):
            assert torch.all(module.weight == 1), name
            assert getattr(module, "bias", None) is None or torch.all(module.bias == 0), name
        elif isinstance(module, KeySlots):
            assert torch.all(module.logit == 0)
    assert model.sink_tokens.std().item() == pytest.approx(linear_std, rel=0.25)


@INITS
def test_init_follows_the_paper(init_config):
    assert_paper_init(build(**init_config))


@INITS
@pytest.mark.parametrize("materialise", ["reset_parameters", "init_weights"])
def test_init_after_meta_device_creation(materialise, init_config):
    with torch.device("meta"):
        model = GPT(micro(**init_config))
    model.to_empty(device="cpu")
    for param in model.parameters():
        param.data.fill_(float("nan"))
    torch.manual_seed(0)
    if materialise == "init_weights":
        model.init_weights()
    else:  # what FSDP does: each module that directly owns parameters resets them
        for module in model.modules():
            if any(True for _ in module.parameters(recurse=False)):
                module.reset_parameters()
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert_paper_init(model)


# --------------------------------------------------------------------------------------- positions
def test_rope_scores_depend_only_on_the_offset():
    q, k = torch.randn(2, 8), torch.randn(2, 8)

    def score(i, j):
        cos, sin = rope_cos_sin(torch.tensor([i, j]), 8, 10000, torch.float32)
        return (apply_rope(q[:1], cos[:1], sin[:1]) * apply_rope(k[:1], cos[1:], sin[1:])).sum()

    torch.testing.assert_close(score(5, 2), score(105, 102))
    assert not torch.allclose(score(5, 2), score(5, 4))


def test_linear_rope_scaling_is_plain_rope_at_positions_divided_by_the_factor():
    scaled = rope_cos_sin(torch.arange(0, 64, 4), 8, 10000.0, torch.float64, RopeScaling("linear", 4.0))
    plain = rope_cos_sin(torch.arange(16), 8, 10000.0, torch.float64)
    for a, b in zip(scaled, plain):
        torch.testing.assert_close(a, b)


def test_llama3_rope_scaling_keeps_short_wavelengths_and_stretches_long_ones():
    scaling = RopeScaling("llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_seq_len=64)
    inv_freq = 1.0 / 10000.0 ** (torch.arange(0, 16, 2).float() / 16)
    wavelength = 2 * math.pi / inv_freq
    ratio = scaling.apply(inv_freq) / inv_freq
    short, long = wavelength < 64 / 4, wavelength > 64 / 1
    assert short.any() and long.any() and (~short & ~long).any()
    assert torch.equal(ratio[short], torch.ones(int(short.sum())))
    torch.testing.assert_close(ratio[long], torch.full((int(long.sum()),), 1 / 8))
    assert (ratio[~short & ~long] < 1).all() and (ratio[~short & ~long] > 1 / 8).all()


@pytest.mark.parametrize(
    "overrides, match",
    [
        (dict(rope_scaling="yarn"), "rope_scaling='yarn' is not one of default, linear, llama3"),
        (dict(rope_scaling="linear", rope_scaling_factor=0.0), "rope_scaling_factor must be a positive number"),
        (dict(rope_scaling="llama3", rope_low_freq_factor=4.0), "rope_high_freq_factor > rope_low_freq_factor"),
        (dict(rope_scaling="linear", pos_embedding="alibi"), "needs pos_embedding=rope"),
    ],
)
def test_rope_scaling_settings_that_cannot_work_are_refused(overrides, match):
    with pytest.raises(ConfigError, match=match):
        micro(**overrides)


def test_rope_scaling_shows_in_the_variant_summary_only_when_used():
    assert micro().variant_summary() == "softmax norm:sum"
    assert micro(rope_scaling="llama3", rope_scaling_factor=8.0).variant_summary() == "softmax norm:sum rope:llama3x8"


def test_alibi_slopes_and_bias():
    assert alibi_slopes(8).tolist() == [2.0 ** -(i + 1) for i in range(8)]
    assert alibi_slopes(6).tolist() == pytest.approx([2**-2, 2**-4, 2**-6, 2**-8, 2**-1, 2**-3])
    bias = ALiBi(2)(torch.arange(4), torch.arange(4))
    assert bias[0, 3, 0] == -3 * 2**-4 and bias[1, 2, 1] == -1 * 2**-8


def test_relative_bias_is_a_learned_table_over_saturating_buckets():
    offsets = -torch.tensor([0, 1, 3, 4, 8, 15, 16, 17, 100, 1000])  # key - query
    assert relative_bucket(offsets, 8, 16).tolist() == [0, 1, 3, 4, 6, 7, 7, 7, 7, 7]
    assert relative_bucket(torch.tensor([5]), 8, 16).item() == 0  # future keys share bucket 0
    module = RelativeBias(n_head=2, n_buckets=8, max_distance=16)
    bias = module(torch.arange(40), torch.arange(40))
    assert bias.shape == (2, 40, 40)
    torch.testing.assert_close(bias[:, 39, 0], module.table.weight[7])  # bounded, not growing with distance
    assert bias.requires_grad


def test_absolute_and_learnable_positions_are_added_to_the_embeddings():
    table = sinusoidal(torch.arange(3), 6)
    torch.testing.assert_close(table[0], torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0, 1.0]))
    torch.testing.assert_close(table[2, :2], torch.tensor([math.sin(2.0), math.cos(2.0)]))
    learnable = build(pos_embedding="learnable", sink_tokens=2)
    assert learnable.wpe.num_embeddings == 64 + 2
    with pytest.raises(ConfigError, match="exceeds block_size"):
        learnable(tokens(length=65))


@torch.no_grad()
@pytest.mark.parametrize("pos", ["rope", "nope", "alibi", "relative", "absolute", "learnable"])
def test_relative_encodings_are_shift_invariant_and_absolute_ones_are_not(pos):
    """Starting the same text at absolute position 20 (a cache that moved on) changes nothing for
    encodings of relative position only, and changes the logits for absolute ones."""
    model = build(pos_embedding=pos)
    idx = tokens(length=6)
    shifted = model.new_cache()
    shifted.next_pos = 20
    same = torch.allclose(model(idx, cache=shifted), model(idx), atol=1e-5, rtol=0)
    assert same == (pos not in ("absolute", "learnable"))


# ---------------------------------------------------------------------------------------- MLP, norms, GQA
def gelu_tanh(x):
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


@pytest.mark.parametrize(
    "kind, act, gated",
    [
        ("swiglu", F.silu, True),
        ("reglu", F.relu, True),
        ("geglu", F.gelu, True),
        ("relu", F.relu, False),
        ("gelu", F.gelu, False),
        ("gelu_tanh", gelu_tanh, False),
        ("swish", F.silu, False),
    ],
)
@pytest.mark.parametrize("bias", [False, True])
def test_mlp_kinds(kind, act, gated, bias):
    mlp = MLP(8, 12, kind, bias)
    for linear in (mlp.gate_proj, mlp.up_proj, mlp.down_proj):
        if linear is not None and bias:
            nn.init.normal_(linear.bias)
    x = torch.randn(3, 8)
    up = lambda linear: F.linear(x, linear.weight, linear.bias)  # noqa: E731
    hidden = act(up(mlp.gate_proj)) * up(mlp.up_proj) if gated else act(up(mlp.up_proj))
    assert (mlp.gate_proj is not None) == gated
    assert all(linear.bias is not None for linear in (mlp.up_proj, mlp.down_proj)) == bias
    torch.testing.assert_close(mlp(x), F.linear(hidden, mlp.down_proj.weight, mlp.down_proj.bias))


def test_gelu_and_gelu_tanh_are_different_functions():
    x = torch.linspace(-4, 4, 101)
    assert 1e-4 < (MLP(8, 8, "gelu").act(x) - MLP(8, 8, "gelu_tanh").act(x)).abs().max() < 1e-2


@pytest.mark.parametrize("norm_position", ["pre", "post"])
def test_attention_only_blocks_add_attention_and_nothing_else(norm_position):
    model = build(mlp="none", norm_position=norm_position)
    assert not any(".mlp." in name or ".norm_2." in name for name in model.state_dict())
    block, x, positions = model.blocks[0], torch.randn(2, 6, 32), torch.arange(6)
    rope = rope_cos_sin(positions, model.config.head_size, model.config.rope_base, x.dtype)
    with torch.no_grad():
        if norm_position == "pre":
            expected = x + block.attn(block.norm_1(x), positions, rope)[0]
        else:
            expected = block.norm_1(x + block.attn(x, positions, rope)[0])
        torch.testing.assert_close(block(x, positions, rope)[0], expected)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    idx = tokens(length=16)
    losses = []
    for _ in range(5):
        loss = F.cross_entropy(model(idx[:, :-1]).flatten(0, 1), idx[:, 1:].flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


@torch.no_grad()
def test_layernorm_centres_and_biases_go_into_every_projection():
    model = build(norm_class="layernorm", bias=True)
    block = model.blocks[0]
    assert isinstance(block.norm_1, nn.LayerNorm) and isinstance(model.norm, nn.LayerNorm)
    x = torch.randn(2, 5, 32) * 3 + 7
    torch.testing.assert_close(block.norm_1(x).mean(-1), torch.zeros(2, 5), atol=1e-5, rtol=0)
    linears = (block.attn.qkv, block.attn.proj, block.mlp.up_proj, block.mlp.down_proj)
    assert all(linear.bias is not None for linear in linears)
    assert all(linear.bias is None for linear in (build().blocks[0].attn.qkv, build().blocks[0].mlp.up_proj))


def test_tied_embeddings_are_one_parameter_serving_lookup_and_head():
    model = build(tie_embeddings=True)
    assert model.lm_head is None and "lm_head.weight" not in model.state_dict()
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in build().parameters()) - 128 * 32
    hidden = torch.randn(2, 3, 32)
    torch.testing.assert_close(model.head(hidden), hidden @ model.wte.weight.T)
    idx = tokens(length=8)
    model(idx).sum().backward()
    not_looked_up = torch.ones(128, dtype=torch.bool)
    not_looked_up[idx.flatten()] = False
    assert model.wte.weight.grad[not_looked_up].abs().sum() > 0  # the head's gradient reaches every row


@torch.no_grad()
def test_post_norm_blocks_output_unit_rms():
    model = build(norm_position="post")
    x = model.wte(tokens(length=6))
    positions = torch.arange(6)
    rope = rope_cos_sin(positions, model.config.head_size, model.config.rope_base, x.dtype)
    for block in model.blocks:
        x, _ = block(x, positions, rope)
        torch.testing.assert_close(x.pow(2).mean(-1), torch.ones(2, 6), atol=1e-3, rtol=0)


@torch.no_grad()
def test_grouped_query_attention_equals_multi_head_with_repeated_key_value_heads():
    gqa = build(n_query_groups=2)
    mha = build()
    state = gqa.state_dict()
    hs, n_head = 8, 4
    for i in range(gqa.config.n_layer):
        q, k, v = state[f"blocks.{i}.attn.qkv.weight"].split((n_head * hs, 2 * hs, 2 * hs))

        def repeat(w):
            return w.view(2, hs, -1).repeat_interleave(2, dim=0).reshape(n_head * hs, -1)

        state[f"blocks.{i}.attn.qkv.weight"] = torch.cat((q, repeat(k), repeat(v)))
    mha.load_state_dict(state)
    idx = tokens(length=8)
    torch.testing.assert_close(gqa(idx), mha(idx), atol=1e-5, rtol=0)
    assert gqa.blocks[0].attn.qkv.out_features == (4 + 2 * 2) * hs


def test_too_long_input_is_an_error():
    with pytest.raises(ConfigError, match="exceeds block_size=64"):
        build()(tokens(length=65))
