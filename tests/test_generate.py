import pytest
import torch

from lit_gpt.model.config import Config
from lit_gpt.model.generate import GenerationError, generate, insert_tokens, next_token, without_positions
from lit_gpt.model.gpt import GPT

VARIANTS = {
    "default": {},
    "gqa": dict(n_query_groups=2),
    "sigmoid_none": dict(attn_score="sigmoid", attn_normalize="none"),
    "sigmoid_sum": dict(attn_score="sigmoid"),
    "elu_none": dict(attn_score="elu", attn_normalize="none"),
    "kernel_elu": dict(attn_score="linear", attn_kernel="elu"),
    "kernel_mlp_max_abs": dict(attn_score="linear", attn_kernel="mlp", attn_normalize="max_abs"),
    "linear_none": dict(attn_score="linear", attn_kernel="linear", attn_normalize="none"),
    "window": dict(window_size=4),
    "prefix": dict(prefix_tokens=3),
    "kv_bias": dict(k_bias=True, v_bias=True),
    "k_bias_head": dict(k_bias=True, head_bias=True),
    "v_bias": dict(v_bias=True),
    "off_by_one": dict(softmax_off_by_one=True),
    "sink_logit": dict(sink_logit=True),
    "sink_tokens_window": dict(sink_tokens=2, window_size=4),
    "gate": dict(attn_gate="headwise"),
    "alibi": dict(pos_embedding="alibi"),
    "relative": dict(pos_embedding="relative"),
    "learnable": dict(pos_embedding="learnable"),
    "absolute": dict(pos_embedding="absolute"),
    "nope_post_norm": dict(pos_embedding="nope", norm_position="post"),
}


def sharp_model(**overrides):
    """A micro model whose logits are far apart, so greedy choices cannot flip on rounding."""
    torch.manual_seed(0)
    model = GPT(Config.from_name("micro", **overrides)).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(20.0)
    return model


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_greedy_generation_is_the_same_with_and_without_the_cache(name):
    model = sharp_model(**VARIANTS[name])
    prompt = torch.randint(0, 128, (2, 5), generator=torch.Generator().manual_seed(1))
    cached = generate(model, prompt, max_new_tokens=20, use_cache=True)
    recomputed = generate(model, prompt, max_new_tokens=20, use_cache=False)
    assert cached.shape == (2, 25)
    assert torch.equal(cached, recomputed)
    assert torch.equal(cached[:, :5], prompt)


def test_sampling_is_reproducible_and_respects_top_k_and_vocab():
    logits = torch.zeros(1, 192)
    logits[0, 150:] = 100.0  # padding rows beyond the vocabulary must never be picked
    logits[0, 7], logits[0, 9] = 5.0, 4.0
    assert next_token(logits, vocab_size=128).item() == 7
    draws = {next_token(logits, 128, temperature=1.0, top_k=2).item() for _ in range(50)}
    assert draws <= {7, 9}

    model = sharp_model()
    prompt = torch.tensor([1, 2, 3])
    first = generate(model, prompt, 10, temperature=2.0, generator=torch.Generator().manual_seed(3))
    again = generate(model, prompt, 10, temperature=2.0, generator=torch.Generator().manual_seed(3))
    assert first.shape == (13,) and torch.equal(first, again)


def test_eos_forced_tokens_and_length_limits():
    model = sharp_model()
    prompt = torch.tensor([[1, 2, 3]])
    greedy = generate(model, prompt, 6)
    stop = int(greedy[0, 4])
    assert generate(model, prompt, 6, eos_id=stop).shape[1] <= 5
    inserted = generate(model, prompt, 6, inserted_tokens={0: 9, 5: 42})
    assert inserted.shape[1] == 1 + 3 + 6
    assert inserted[0, 0] == 9 and inserted[0, 1:4].tolist() == [1, 2, 3] and inserted[0, 5] == 42
    assert torch.equal(inserted, generate(model, prompt, 6, inserted_tokens={0: 9, 5: 42}, use_cache=False))
    assert without_positions(inserted[0], {0: 9, 5: 42}) == [1, 2, 3, int(inserted[0, 4]), *inserted[0, 6:].tolist()]
    with pytest.raises(ValueError, match="block_size"):
        generate(model, prompt, 64)
    with pytest.raises(ValueError, match="empty"):
        generate(model, prompt[:, :0], 2)
    with pytest.raises(ValueError, match="prefix"):
        generate(sharp_model(prefix_tokens=4), prompt, 2)


def test_fixed_token_is_inserted_so_the_prompt_is_kept_whole():
    prompt = torch.tensor([[5, 6, 7]])
    assert insert_tokens(prompt, {0: 1}).tolist() == [[1, 5, 6, 7]]
    assert insert_tokens(prompt, {2: 1}).tolist() == [[5, 6, 1, 7]]
    assert insert_tokens(prompt, {3: 1}).tolist() == [[5, 6, 7, 1]]
    assert insert_tokens(prompt, {9: 1}).tolist() == [[5, 6, 7]]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"max_new_tokens": -1}, "max_new_tokens must be >= 0"),
        ({"max_new_tokens": 2, "top_k": 0}, "top_k must be >= 1"),
        ({"max_new_tokens": 2, "temperature": -0.5}, "temperature must be a finite number >= 0"),
        ({"max_new_tokens": 2, "temperature": float("nan")}, "temperature must be a finite number >= 0 .*got nan"),
        ({"max_new_tokens": 2, "temperature": float("inf")}, "temperature must be a finite number >= 0 .*got inf"),
    ],
)
def test_sampling_settings_without_a_meaning_are_refused(kwargs, match):
    with pytest.raises(GenerationError, match=match):
        generate(sharp_model(), torch.tensor([1, 2]), **kwargs)


def test_zero_new_tokens_returns_the_prompt_and_foreign_ids_are_refused():
    model = sharp_model()
    assert generate(model, torch.tensor([1, 2]), 0).tolist() == [1, 2]
    with pytest.raises(GenerationError, match="vocab_size"):
        generate(model, torch.tensor([1, model.config.vocab_size]), 2)


@pytest.mark.parametrize("temperature", [1e-30, 1e-300, 5e-324])
def test_a_vanishing_temperature_samples_as_greedy_does(temperature):
    logits = torch.tensor([[1.0, 3.0, 2.0, 3.0 - 1e-3]])  # logits / 1e-300 overflow to inf without the shift
    draws = {
        next_token(logits, 4, temperature, generator=torch.Generator().manual_seed(seed)).item() for seed in range(20)
    }
    assert draws == {1}
    model = sharp_model()
    prompt = torch.tensor([1, 2, 3])
    assert torch.equal(generate(model, prompt, 6, temperature=temperature), generate(model, prompt, 6))


def test_top_k_at_or_beyond_the_vocabulary_keeps_every_token():
    logits = torch.zeros(1, 8)
    for top_k in (8, 9, 10**30):
        draws = {next_token(logits, 8, 1.0, top_k, torch.Generator().manual_seed(seed)).item() for seed in range(200)}
        assert draws == set(range(8))


def test_logits_that_are_not_finite_are_named_instead_of_a_torch_error():
    logits = torch.tensor([[0.0, float("nan"), 1.0]])
    with pytest.raises(GenerationError, match="logits hold NaN or infinity"):
        next_token(logits, 3, temperature=1.0)
