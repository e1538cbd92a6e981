import pytest
import torch

from lit_gpt.config import Config
from lit_gpt.generate import generate, next_token
from lit_gpt.model import GPT

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
    forced = generate(model, prompt, 6, forced_tokens={0: 9, 5: 42})
    assert forced[0, 0] == 9 and forced[0, 5] == 42
    assert torch.equal(forced, generate(model, prompt, 6, forced_tokens={0: 9, 5: 42}, use_cache=False))
    with pytest.raises(ValueError, match="block_size"):
        generate(model, prompt, 64)
    with pytest.raises(ValueError, match="empty"):
        generate(model, prompt[:, :0], 2)
    with pytest.raises(ValueError, match="prefix"):
        generate(sharp_model(prefix_tokens=4), prompt, 2)
