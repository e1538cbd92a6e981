import pytest
import torch
import torch.nn.functional as F

from lit_gpt.measurement.sink_costs import streaming_costs
from lit_gpt.measurement.streaming import (
    CachePolicy,
    StreamingError,
    policy,
    position_rule,
    streaming_perplexities,
    token_nlls,
)
from lit_gpt.model.config import Config
from lit_gpt.model.gpt import GPT


def micro(**overrides):
    torch.manual_seed(0)
    return GPT(Config.from_name("micro", **overrides)).eval()


def text(n, seed=0):
    return torch.randint(0, 128, (n,), generator=torch.Generator().manual_seed(seed))


def full_forward_nlls(model, tokens):
    with torch.no_grad():
        logits = model(tokens[None])[0]
    return F.cross_entropy(logits[:-1, : model.config.vocab_size], tokens[1:], reduction="none")


def test_kept_indices_hold_model_sinks_first_tokens_and_the_recent_window():
    assert CachePolicy(window=3, keep_first=2).kept(10, n_model_sinks=1).tolist() == [0, 1, 2, 8, 9]
    assert CachePolicy(window=3).kept(10, n_model_sinks=0).tolist() == [8, 9]
    assert CachePolicy(window=3, keep_first=4).kept(3, n_model_sinks=0).tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="policy"):
        policy("lru", 4, 0)


def test_full_cache_matches_a_plain_forward_and_chunking_does_not_matter():
    model, tokens = micro(), text(40)
    expected = full_forward_nlls(model, tokens)
    assert torch.allclose(token_nlls(model, tokens, CachePolicy()), expected, atol=1e-5)
    assert torch.allclose(token_nlls(model, tokens, CachePolicy(), chunk_size=7), expected, atol=1e-5)


def test_window_cache_computes_what_a_sliding_window_mask_computes():
    model, tokens = micro(), text(48)
    windowed = GPT(model.config.replace(window_size=8)).eval()
    windowed.load_state_dict(model.state_dict())
    got = token_nlls(model, tokens, CachePolicy(window=8))
    assert torch.allclose(got, full_forward_nlls(windowed, tokens), atol=1e-5)
    assert torch.allclose(token_nlls(model, tokens, CachePolicy(window=8, keep_first=0)), got)


def test_eviction_is_invisible_to_a_model_that_never_looks_that_far():
    # No position encoding: renumbering moves the always-visible sink tokens closer, which RoPE would see.
    model, tokens = micro(window_size=6, sink_tokens=2, pos_embedding="nope"), text(40)
    full = token_nlls(model, tokens, CachePolicy())
    assert torch.allclose(token_nlls(model, tokens, CachePolicy(window=6)), full, atol=1e-5)


def test_sink_cache_differs_from_window_and_all_agree_when_the_window_covers_the_text():
    model, tokens = micro(), text(40)
    short = streaming_perplexities(model, tokens, window=8, n_sink=4)
    assert set(short["perplexity"]) == {"full", "window", "sink"}
    assert short["perplexity"]["sink"] != short["perplexity"]["window"]
    covering = streaming_perplexities(model, tokens, window=40, n_sink=4)
    values = list(covering["perplexity"].values())
    assert values == pytest.approx([values[0]] * 3, rel=1e-5)


def test_text_longer_than_the_block_size_streams():
    model = micro()
    result = streaming_perplexities(model, text(model.config.block_size + 4), window=8, n_sink=2)
    assert all(v > 1.0 for v in result["perplexity"].values())


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"pos_embedding": "alibi"},
        {"pos_embedding": "relative"},
        {"attn_score": "linear", "attn_kernel": "elu", "attn_normalize": "sum"},
        {"sink_tokens": 2},
    ],
    ids=["rope", "alibi", "relative", "elu_kernel", "sink_tokens"],
)
def test_sink_cache_numbers_positions_inside_the_cache_as_streaming_llm(overrides):
    # With one block, cached keys and values depend only on their tokens, so StreamingLLM's cache at step t
    # equals a fresh forward of [kept first tokens, the window ending at t] at positions 0, 1, 2, ...
    model, tokens, window, keep = micro(n_layer=1, **overrides), text(30), 8, 2
    got = token_nlls(model, tokens, CachePolicy(window=window, keep_first=keep))
    for t in range(keep + window, len(tokens) - 1):
        context = torch.cat((tokens[:keep], tokens[t - window + 1 : t + 1]))
        with torch.no_grad():
            logits = model(context[None])[0, -1, : model.config.vocab_size]
        expected = F.cross_entropy(logits[None], tokens[t + 1 : t + 2])
        assert got[t] == pytest.approx(float(expected), abs=1e-5), t


def test_models_whose_positions_are_more_than_distances_stream_by_text_positions():
    assert position_rule(micro(prefix_tokens=4).config) == position_rule(micro(pos_embedding="learnable").config)
    assert position_rule(micro(prefix_tokens=4).config) == "text" != position_rule(micro(pos_embedding="alibi").config)
    # A window cache on an absolute-position model computes what a sliding-window mask computes.
    model, tokens = micro(pos_embedding="absolute"), text(48)
    assert position_rule(model.config) == "text"
    windowed = GPT(model.config.replace(window_size=8)).eval()
    windowed.load_state_dict(model.state_dict())
    got = token_nlls(model, tokens, CachePolicy(window=8))
    assert torch.allclose(got, full_forward_nlls(windowed, tokens), atol=1e-5)
    assert streaming_perplexities(model, tokens, window=8)["positions"] == "text"


def test_a_learnable_position_model_is_refused_past_its_table_and_its_costs_say_why():
    model = micro(pos_embedding="learnable")
    tokens = text(model.config.block_size + 1)
    with pytest.raises(StreamingError, match="positions for 64 tokens.*use at most 64 tokens"):
        streaming_perplexities(model, tokens, window=8)
    costs = streaming_costs(model, tokens)
    assert costs["perplexity_full"] is None and "positions for 64 tokens" in costs["unavailable"]
    assert streaming_perplexities(model, tokens[:64], window=8)["positions"] == "text"


def test_an_eviction_renumbers_the_kept_entries_and_the_next_position():
    model = micro()
    cache = model.new_cache(positions_in_cache=True)
    with torch.no_grad():
        model(text(12)[None], cache=cache)
    cache.keep(CachePolicy(window=4, keep_first=2).kept(len(cache), 0))
    assert cache.next_pos == len(cache) == 5
    assert all(layer.pos.tolist() == list(range(5)) for layer in cache.layers)
    absolute = model.new_cache()
    with torch.no_grad():
        model(text(12)[None], cache=absolute)
    absolute.keep(CachePolicy(window=4, keep_first=2).kept(len(absolute), 0))
    assert absolute.next_pos == 12 and absolute.layers[0].pos.tolist() == [0, 1, 9, 10, 11]


def test_results_record_the_position_rule():
    assert streaming_perplexities(micro(), text(20), window=8)["positions"] == "in_cache"
