from dataclasses import dataclass, replace

import pytest
import torch
from variants import SOFTMAX_VARIANTS, flex_computes, is_softmax, micro, tokens

from lit_gpt.model.attention import (
    AttentionProblem,
    AttentionRuntime,
    AttentionSpec,
    CausalSelfAttention,
    Eager,
    MaskSpec,
)
from lit_gpt.model.attention.backends import FUSED, auto_chunk_size
from lit_gpt.model.attention.weights import elu_plus_one
from lit_gpt.model.config import CHOICES, ConfigError
from lit_gpt.model.gpt import GPT
from lit_gpt.model.positions import rope_cos_sin
from lit_gpt.model.variants import ATTENTION_VARIANTS, VARIANTS

pytestmark = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")


def grid(rows: str) -> torch.Tensor:
    return torch.tensor([[c == "1" for c in row] for row in rows.split()])


# ------------------------------------------------------------------------------------------ masks
@pytest.mark.parametrize(
    "mask, expected",
    [
        (MaskSpec(), "10000 11000 11100 11110 11111"),
        (MaskSpec(window=2), "10000 11000 01100 00110 00011"),
        (MaskSpec(window=3), "10000 11000 11100 01110 00111"),
        (MaskSpec(prefix=2), "11000 11000 11100 11110 11111"),
        # one sink token at position 0: outside every window, but still causal
        (MaskSpec(window=2, n_sink=1), "10000 11000 11100 10110 10011"),
        # the prefix counts real tokens, so it ends after the sink token
        (MaskSpec(prefix=2, n_sink=1), "11100 11100 11100 11110 11111"),
    ],
    ids=["causal", "window2", "window3", "prefix2", "window_sink", "prefix_sink"],
)
def test_masks_are_exact(mask, expected):
    positions = torch.arange(5)
    assert torch.equal(mask.matrix(positions, positions), grid(expected))
    # a cached decoding step masks a query by its absolute position exactly like the full pass
    assert torch.equal(mask.matrix(positions[3:], positions), grid(expected)[3:])


# ------------------------------------------------------------------------------------ weight functions
def random_problem(n_slots=0, seed=0, length=6, requires_grad=False):
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(2, 3, length, 4, generator=gen, requires_grad=requires_grad) for _ in range(3))
    slots = {}
    if n_slots:
        slots = dict(
            slot_k=torch.randn(3, n_slots, 4, generator=gen),
            slot_v=torch.randn(3, n_slots, 4, generator=gen),
            slot_bias=torch.randn(3, n_slots, generator=gen),
        )
    positions = torch.arange(length)
    return AttentionProblem(q, k, v, positions, positions, aligned=True, **slots)


WEIGHT_FORMULAS = [
    ("sigmoid", torch.sigmoid),
    ("elu", lambda s: torch.nn.functional.elu(s) + 1),
    ("linear", lambda s: s),
]


def written_out_weights(problem, formula, normalize):
    """The weights of a non-softmax spec, computed the plain way: scale, bias, weight function, zero the
    masked keys, divide each row."""
    keys, _ = problem.full_keys()
    scores = problem.q @ keys.transpose(-1, -2) / 2 + problem.score_bias(problem.q_pos)
    raw = formula(scores) * problem.visible(MaskSpec(), problem.q_pos)
    row_sum = raw.sum(-1, keepdim=True)
    return {"none": raw, "sum": raw / row_sum, "max_abs": raw / row_sum.abs().clamp(min=1)}[normalize]


@pytest.mark.parametrize("score_fn, formula", WEIGHT_FORMULAS)
@pytest.mark.parametrize("normalize", ["none", "sum", "max_abs"])
def test_weight_functions_and_normalisers(score_fn, formula, normalize):
    problem = random_problem(n_slots=1)
    _, weights = Eager().attend(problem, AttentionSpec(score=score_fn, normalize=normalize), need_weights=True)
    torch.testing.assert_close(weights, written_out_weights(problem, formula, normalize))


@pytest.mark.parametrize("score_fn, formula", WEIGHT_FORMULAS)
@pytest.mark.parametrize("normalize", ["none", "sum", "max_abs"])
def test_eager_output_and_gradients_equal_the_written_out_formula(score_fn, formula, normalize):
    """The eager path's shortcuts (scale on q, the mask added to the scores, the row normaliser applied to
    the output, elu + 1 from exp with its own backward) compute the same function and gradients."""
    results = []
    for eager in (True, False):
        problem = random_problem(n_slots=1, requires_grad=True)
        if eager:
            y = Eager()(problem, AttentionSpec(score=score_fn, normalize=normalize))
        else:
            y = written_out_weights(problem, formula, normalize) @ problem.full_keys()[1]
        y.pow(2).sum().backward()
        results.append([y, problem.q.grad, problem.k.grad, problem.v.grad])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b)


def test_elu_plus_one_equals_elu_plus_one_with_its_gradient_and_is_zero_at_minus_infinity():
    x = torch.cat(
        [torch.linspace(-30, 30, 601, dtype=torch.float64), torch.tensor([float("-inf")], dtype=torch.float64)]
    )
    x.requires_grad_()
    y = elu_plus_one(x)
    torch.testing.assert_close(y, torch.nn.functional.elu(x) + 1)
    assert y[-1] == 0
    y.sum().backward()
    reference = x.detach().clone().requires_grad_()
    (torch.nn.functional.elu(reference) + 1).sum().backward()
    torch.testing.assert_close(x.grad, reference.grad)
    assert torch.autograd.gradcheck(elu_plus_one, (torch.randn(50, dtype=torch.float64, requires_grad=True),))


@pytest.mark.parametrize("score_fn, normalize", [("softmax", "sum"), ("sigmoid", "sum"), ("elu", "sum")])
def test_normalised_rows_sum_to_one_including_slots_and_masked_keys_get_zero(score_fn, normalize):
    problem = random_problem(n_slots=2)
    spec = AttentionSpec(score=score_fn, normalize=normalize, mask=MaskSpec(window=3))
    y, weights = Eager().attend(problem, spec, need_weights=True)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 3, 6))
    hidden = ~problem.visible(MaskSpec(window=3), problem.q_pos)
    assert hidden[:, 2:].any() and not hidden[:, :2].any()  # slots are always visible
    assert torch.all(weights[..., hidden] == 0)
    # the map is what the values are multiplied with
    torch.testing.assert_close(y, weights @ problem.full_keys()[1])


def test_chunked_eager_equals_unchunked_with_gradients():
    results = []
    for chunk in (2, 0):
        problem = random_problem(n_slots=1, requires_grad=True, length=7)
        y = Eager(chunk)(problem, AttentionSpec(score="sigmoid", mask=MaskSpec(window=3)))
        y.pow(2).sum().backward()
        results.append([y, problem.q.grad, problem.k.grad, problem.v.grad])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b)


EAGER_VARIANTS = {name: o for name, o in VARIANTS.items() if name not in SOFTMAX_VARIANTS}


@pytest.mark.parametrize("overrides", EAGER_VARIANTS.values(), ids=EAGER_VARIANTS.keys())
def test_chunked_model_equals_unchunked_with_gradients(overrides):
    """Small chunks (recomputed in backward) give the same logits and gradients as one block."""
    models = []
    for chunk in (3, 0):
        torch.manual_seed(0)
        model = GPT(micro(**overrides), AttentionRuntime(chunk_size=chunk))
        model(tokens(length=12)).logsumexp(-1).sum().backward()
        models.append(model)
    for (name, a), b in zip(models[0].named_parameters(), models[1].parameters()):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_auto_chunk_bounds_the_score_block_at_half_the_queries():
    head_size, length = 96, 2048
    chunk = auto_chunk_size(length, head_size)
    assert chunk * length == head_size * length // 2
    assert auto_chunk_size(64, head_size) >= 64  # short sequences are one block


# --------------------------------------------------------------------------- layer-level equivalences
def layer_output(layer: CausalSelfAttention, x: torch.Tensor) -> torch.Tensor:
    positions = torch.arange(x.shape[1])
    rope = rope_cos_sin(positions, layer.config.head_size, layer.config.rope_base, x.dtype)
    return layer(x, positions, rope)[0]


def same_weights(reference: CausalSelfAttention, **overrides) -> CausalSelfAttention:
    """A layer of another variant sharing the reference's projections and runtime (its own extra parts keep
    their init)."""
    layer = CausalSelfAttention(micro(**overrides), reference.runtime)
    missing, unexpected = layer.load_state_dict(reference.state_dict(), strict=False)
    assert not unexpected and all(not name.startswith(("qkv", "proj")) for name in missing)
    return layer


@pytest.mark.parametrize("backend", ["eager", "sdpa"])
def test_off_by_one_equals_a_zero_key_value_slot(backend):
    torch.manual_seed(0)
    off_by_one = CausalSelfAttention(micro(softmax_off_by_one=True), AttentionRuntime(backend))
    slot = same_weights(off_by_one, k_bias=True, v_bias=True)
    with torch.no_grad():
        slot.slots.k_star.zero_()
        slot.slots.v_star.zero_()
    x = torch.randn(2, 9, 32)
    plain = same_weights(off_by_one)
    torch.testing.assert_close(layer_output(off_by_one, x), layer_output(slot, x))
    assert not torch.allclose(layer_output(off_by_one, x), layer_output(plain, x))


@pytest.mark.parametrize(
    "score",
    [dict(), dict(attn_score="sigmoid", attn_normalize="none"), dict(attn_score="linear", attn_kernel="elu")],
    ids=["softmax", "sigmoid", "kernel"],
)
@pytest.mark.parametrize("window", [9, 100])
def test_window_at_least_the_sequence_equals_plain_causal(score, window):
    torch.manual_seed(0)
    causal = CausalSelfAttention(micro(**score), AttentionRuntime("eager"))
    windowed = same_weights(causal, window_size=window, **score)
    if causal.feature_map is not None:
        windowed.feature_map.load_state_dict(causal.feature_map.state_dict())
    x = torch.randn(2, 9, 32)
    torch.testing.assert_close(layer_output(causal, x), layer_output(windowed, x))
    narrow = same_weights(causal, window_size=3, **score)
    assert not torch.allclose(layer_output(causal, x), layer_output(narrow, x))


def test_v_bias_alone_adds_v_star_to_every_head_output():
    torch.manual_seed(0)
    plain = CausalSelfAttention(micro())
    biased = same_weights(plain, v_bias=True, head_bias=True)
    x = torch.randn(1, 5, 32)
    shift = biased.proj(biased.slots.v_star.reshape(-1))
    torch.testing.assert_close(layer_output(biased, x), layer_output(plain, x) + shift)


def test_a_large_sink_logit_absorbs_all_attention():
    torch.manual_seed(0)
    layer = CausalSelfAttention(micro(sink_logit=True))
    with torch.no_grad():
        layer.slots.logit.fill_(50.0)
    torch.testing.assert_close(layer_output(layer, torch.randn(2, 6, 32)), torch.zeros(2, 6, 32))


@pytest.mark.parametrize("gate", ["headwise", "elementwise"])
def test_output_gate(gate):
    torch.manual_seed(0)
    plain = CausalSelfAttention(micro())
    gated = same_weights(plain, attn_gate=gate)
    assert gated.gate.proj.out_features == {"headwise": 4, "elementwise": 32}[gate]
    x = torch.randn(2, 6, 32)
    layer_output(gated, x).sum().backward()
    assert gated.gate.proj.weight.grad.abs().sum() > 0
    with torch.no_grad():
        gated.gate.proj.weight.zero_()  # sigmoid(0) = 1/2 on every head / channel
        torch.testing.assert_close(layer_output(gated, x), layer_output(plain, x) / 2)


# ------------------------------------------------------------------------------------------ backends
def chosen(config, backend="auto", device="cpu", dtype=torch.float32, training=True, aligned=True) -> str:
    """Name of the backend a layer of `config` runs on for calls of this kind."""
    spec = AttentionSpec.from_config(config)
    return AttentionRuntime(backend).select(spec, torch.device(device), dtype, training, aligned).name


def model_pair(overrides, backend):
    torch.manual_seed(0)
    reference = GPT(micro(**overrides), AttentionRuntime("eager"))
    other = GPT(micro(**overrides), AttentionRuntime(backend))
    other.load_state_dict(reference.state_dict())
    return reference, other


@pytest.mark.parametrize("overrides", SOFTMAX_VARIANTS.values(), ids=SOFTMAX_VARIANTS.keys())
def test_sdpa_matches_eager_forward_and_backward(overrides):
    reference, sdpa = model_pair(overrides, "sdpa")
    idx = tokens(length=12)
    for model in (reference, sdpa):
        model(idx).logsumexp(-1).sum().backward()
    torch.testing.assert_close(sdpa(idx), reference(idx), atol=1e-5, rtol=0)
    for (name, a), b in zip(reference.named_parameters(), sdpa.parameters()):
        torch.testing.assert_close(b.grad, a.grad, atol=1e-5, rtol=0, msg=name)


# FlexAttention without compile is slow on CPU; run it on the variants that change what it computes,
# sigmoid and elu+1 (through log-weight scores and logsumexp) included.
FLEX_VARIANTS = {
    name: o
    for name, o in VARIANTS.items()
    if flex_computes(micro(**o))
    and not name.startswith(("mlp_", "gate_"))
    and name not in ("post_norm", "absolute", "learnable", "nope")
}


@pytest.mark.parametrize("overrides", FLEX_VARIANTS.values(), ids=FLEX_VARIANTS.keys())
@torch.no_grad()
def test_flex_forward_matches_eager(overrides):
    reference, flex = model_pair(overrides, "flex")
    idx = tokens(length=12)
    torch.testing.assert_close(flex(idx), reference(idx), atol=1e-5, rtol=0)
    assert {b.name for block in flex.blocks for b in block.attn.backends.values()} == {"flex"}


@pytest.mark.parametrize("overrides", VARIANTS.values(), ids=VARIANTS.keys())
def test_cpu_auto_picks_sdpa_for_softmax_and_eager_otherwise(overrides):
    config = micro(**overrides)
    expected = "sdpa" if is_softmax(config) else "eager"
    for training in (True, False):
        for aligned in (True, False):
            assert chosen(config, training=training, aligned=aligned) == expected


@pytest.mark.parametrize("backend", ["flash", "xformers"])
def test_cuda_only_backends_are_refused_on_cpu(backend):
    with pytest.raises(ConfigError, match=f"attn_backend={backend} cannot be used: {backend} needs a CUDA device"):
        chosen(micro(), backend, dtype=torch.bfloat16)


def test_flex_is_refused_for_training_on_cpu_and_fused_backends_for_other_weight_functions():
    with pytest.raises(ConfigError, match="FlexAttention has no backward pass on CPU"):
        chosen(micro(), "flex")
    with pytest.raises(ConfigError, match="sdpa computes softmax attention .*, not score='sigmoid'"):
        chosen(micro(attn_score="sigmoid"), "sdpa")


def test_runtime_settings_are_checked_when_made():
    with pytest.raises(ConfigError, match="attn_backend='fast' is not one of auto, eager, sdpa, flex, flash, xformers"):
        AttentionRuntime("fast")
    with pytest.raises(ConfigError, match="attn_chunk_size must be >= 0"):
        AttentionRuntime(chunk_size=-1)


# Variants a flash-attn / xformers kernel computes exactly: plain softmax with a causal or sliding-window
# mask (anything outside the attention scores is fine: output bias v*, gates, MLPs, input positions).
FLASH_EXACT = {
    "softmax",
    "window",
    "v_bias",
    "v_bias_head",
    "sink_tokens",
    "gate_headwise",
    "gate_elementwise",
    "nope",
    "absolute",
    "learnable",
    "post_norm",
    "gqa",
    "mlp_relu",
    "mlp_gelu",
    "mlp_gelu_tanh",
    "mlp_swish",
    "mlp_reglu",
    "mlp_geglu",
    "layernorm_post_norm",
    "gpt2",
    "gpt2_sink_token",
}


@pytest.mark.parametrize("backend", ["flash", "xformers"])
@pytest.mark.parametrize("name", VARIANTS)
def test_simulated_cuda_picks_a_cuda_kernel_only_where_it_is_exact(monkeypatch, backend, name):
    for kernel in ("flash", "xformers"):
        monkeypatch.setattr(FUSED[kernel], "installed", kernel == backend)
    config = micro(**VARIANTS[name])
    fallback = "sdpa" if is_softmax(config) else "flex" if flex_computes(config) else "eager"
    cuda = dict(device="cuda", dtype=torch.bfloat16)
    assert chosen(config, **cuda) == (backend if name in FLASH_EXACT else fallback)
    assert chosen(config, **cuda, aligned=False) == fallback  # KV cache
    assert chosen(config, device="cuda", dtype=torch.float32) == fallback


@pytest.fixture
def cuda_kernels(monkeypatch):
    """flash-attn and xformers, as if installed (they are only imported when a kernel runs)."""
    for kernel in ("flash", "xformers"):
        monkeypatch.setattr(FUSED[kernel], "installed", True)


def test_explicit_flash_is_honoured_on_cuda_and_refused_where_inexact(cuda_kernels):
    cuda = dict(device="cuda", dtype=torch.bfloat16)
    assert chosen(micro(), "flash", **cuda) == "flash"
    assert chosen(micro(), "flash", **cuda, aligned=False) == "sdpa"  # KV cache: same softmax, position mask
    with pytest.raises(ConfigError, match="flash computes causal or sliding-window softmax attention, not mask="):
        chosen(micro(window_size=4, sink_tokens=1), "flash", **cuda)
    with pytest.raises(ConfigError, match="xformers computes .*, not n_slots=2"):
        chosen(micro(k_bias=True, v_bias=True, sink_logit=True), "xformers", **cuda)


@dataclass(frozen=True)
class FutureSpec(AttentionSpec):
    """A spec with a field nobody has taught the fused kernels (a new mask, weight function, ...)."""

    novelty: int = 0


@pytest.mark.parametrize("name", FUSED)
def test_a_spec_field_unknown_to_a_fused_backend_is_refused_unless_it_keeps_its_default(cuda_kernels, name):
    backend, where = FUSED[name], (torch.device("cuda"), torch.bfloat16, False)
    assert backend.supports(FutureSpec(), *where) is None
    assert backend.supports(FutureSpec(novelty=1), *where) == f"{name} computes {backend.computes}, not novelty=1"
    assert AttentionRuntime().select(FutureSpec(novelty=1), *where, aligned=True).name == "eager"
    with pytest.raises(ConfigError, match=f"attn_backend={name} cannot be used: .*not novelty=1"):
        AttentionRuntime(name).select(FutureSpec(novelty=1), *where, aligned=True)


@dataclass(frozen=True)
class FutureMask(MaskSpec):
    """A mask with a rule the kernels' built-in causal and window masks do not have."""

    stride: int = 0


def test_a_mask_field_unknown_to_the_built_in_masks_is_never_taken_for_causal_or_a_window(cuda_kernels):
    mask = FutureMask(window=4, stride=2)
    assert not mask.is_plain_causal and not FutureMask(stride=2).is_plain_causal
    for kernel in ("flash", "xformers"):
        assert "not mask=FutureMask" in FUSED[kernel].supports(
            AttentionSpec(mask=mask), torch.device("cuda"), torch.bfloat16, True
        )


def test_each_layer_chooses_its_backend_once_per_kind_of_call(monkeypatch):
    calls = []
    select = AttentionRuntime.select
    monkeypatch.setattr(AttentionRuntime, "select", lambda runtime, *kind: calls.append(kind) or select(runtime, *kind))
    model = GPT(micro())
    idx = tokens()
    for _ in range(3):
        model(idx)
        with torch.no_grad():
            model(idx)
    assert len(calls) == 2 * model.config.n_layer  # with and without autograd
    model.set_attention_runtime(AttentionRuntime("eager"))
    model(idx)
    assert len(calls) == 3 * model.config.n_layer
    assert {b.name for block in model.blocks for b in block.attn.backends.values()} == {"eager"}


def test_variant_list_covers_every_attention_choice():
    """Adding a weight function, kernel, normaliser or gate without a test variant fails here."""
    configs = [micro(**o) for o in ATTENTION_VARIANTS.values()]
    for key in ("attn_score", "attn_kernel", "attn_normalize", "attn_gate"):
        assert {getattr(c, key) for c in configs} == set(CHOICES[key]), key


@pytest.mark.parametrize("head_size", [8, 96, 31 * 2])
def test_the_sink_logit_channel_is_padded_to_a_head_size_fused_kernels_take(head_size):
    """D + 1 channels (97 at 60M) are padded with zeros to a multiple of 8; the result is unchanged."""
    from lit_gpt.model.attention.backends import HEAD_MULTIPLE, SDPA, _slot_bias_channel

    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 5, head_size, generator=generator) for _ in range(3))
    positions = torch.arange(5)
    problem = AttentionProblem(
        q,
        k,
        v,
        positions,
        positions,
        aligned=True,
        slot_k=torch.zeros(3, 1, head_size),
        slot_v=torch.zeros(3, 1, head_size),
        slot_bias=torch.randn(3, 1, generator=generator),
    )
    wide = _slot_bias_channel(problem, *problem.full_keys())
    assert {x.shape[-1] for x in wide} == {-(-(head_size + 1) // HEAD_MULTIPLE) * HEAD_MULTIPLE}
    spec = AttentionSpec(n_slots=1, slot_logit=True)
    torch.testing.assert_close(SDPA()(problem, spec), Eager()(problem, spec), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------- key restriction
def restricted(problem: AttentionProblem, key_mask: torch.Tensor) -> AttentionProblem:
    return replace(problem, key_mask=key_mask)


@pytest.mark.parametrize("score, normalize", [("softmax", "sum"), ("sigmoid", "none")])
@pytest.mark.parametrize("chunk", [0, 2])
def test_a_key_mask_allowing_every_key_changes_nothing(score, normalize, chunk):
    problem = random_problem(n_slots=1, length=7)
    spec = AttentionSpec(score=score, normalize=normalize, mask=MaskSpec(window=4))
    everything = restricted(problem, torch.ones(2, 3, 7, 7, dtype=torch.bool))
    y, weights = Eager(chunk).attend(everything, replace(spec, key_mask=True), need_weights=True)
    y_ref, weights_ref = Eager().attend(problem, spec, need_weights=True)
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(weights, weights_ref)


@pytest.mark.parametrize("score, normalize", [("softmax", "sum"), ("sigmoid", "none")])
def test_a_key_mask_restricts_each_query_to_its_keys_like_brute_force(score, normalize):
    problem = random_problem(n_slots=1, length=6)
    key_mask = torch.rand(2, 3, 6, 6, generator=torch.Generator().manual_seed(1)) < 0.5
    key_mask[..., 0] = True  # every query keeps at least one key
    y, weights = Eager(chunk_size=4).attend(
        restricted(problem, key_mask), AttentionSpec(score=score, normalize=normalize, key_mask=True), need_weights=True
    )
    keys, values = problem.full_keys()
    visible = torch.cat((torch.ones(2, 3, 6, 1, dtype=torch.bool), key_mask & torch.ones(6, 6).tril().bool()), dim=-1)
    scores = problem.q @ keys.transpose(-1, -2) / 2 + problem.score_bias(problem.q_pos)
    if score == "softmax":
        expected = scores.exp() * visible
        expected = expected / expected.sum(-1, keepdim=True)
    else:
        expected = torch.sigmoid(scores) * visible
    torch.testing.assert_close(weights, expected)
    torch.testing.assert_close(y, expected @ values)


@pytest.mark.parametrize("name", FUSED)
def test_every_fused_backend_refuses_a_key_mask_and_auto_falls_back_to_eager(cuda_kernels, name):
    where = (torch.device("cuda"), torch.bfloat16, False)
    assert "not key_mask=True" in FUSED[name].supports(AttentionSpec(key_mask=True), *where)
    assert AttentionRuntime().select(AttentionSpec(key_mask=True), *where, aligned=True).name == "eager"


def test_a_problem_and_spec_that_disagree_on_the_key_mask_are_refused():
    problem = random_problem()
    with pytest.raises(ValueError, match="spec.key_mask=True but the problem lacks a key_mask"):
        Eager()(problem, AttentionSpec(key_mask=True))
    with pytest.raises(ValueError, match="spec.key_mask=False but the problem has a key_mask"):
        Eager()(restricted(problem, torch.ones(2, 3, 6, 6, dtype=torch.bool)), AttentionSpec())


@torch.no_grad()
def test_a_layer_key_selector_runs_on_eager_and_allowing_every_key_gives_the_same_logits():
    model = GPT(micro())
    idx = tokens(length=10)
    reference = model(idx)
    seen = []
    for block in model.blocks:
        block.attn.key_selector = lambda p: (
            seen.append(p.q.shape) or torch.ones(*p.q.shape[:3], p.k.shape[2], dtype=torch.bool)
        )
    torch.testing.assert_close(model(idx), reference, atol=1e-5, rtol=0)
    assert len(seen) == model.config.n_layer
    assert {b.name for block in model.blocks for b in block.attn.backends.values()} == {"sdpa", "eager"}
    for block in model.blocks:  # only the first key: every query attends to token 0
        block.attn.key_selector = lambda p: torch.arange(p.k.shape[2]).expand(*p.q.shape[:3], -1) == 0
    _, maps = model(idx, return_attention=True)
    assert all(torch.all(m[..., 0] == 1) for m in maps)
