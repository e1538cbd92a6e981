import math

import pytest
import torch
from torch import nn

from lit_gpt.measurement.analysis import gpt_probe_forward
from lit_gpt.measurement.sink_costs import (
    block_output_statistics,
    kurtosis,
    quantize_activation,
    quantize_weight,
    sink_costs,
    streaming_costs,
    w8a8,
    w8a8_perplexity,
)
from lit_gpt.model.config import Config
from lit_gpt.model.gpt import GPT


def micro(**overrides):
    torch.manual_seed(0)
    return GPT(Config.from_name("micro", **overrides)).eval()


def tokens(*shape, seed=0):
    return torch.randint(0, 128, shape, generator=torch.Generator().manual_seed(seed))


def test_kurtosis_matches_the_hand_computation():
    # [1, 2, 3, 4]: deviations +-1.5, +-0.5; E[d^2] = 1.25, E[d^4] = 2.5625; 2.5625 / 1.25^2 = 1.64.
    assert kurtosis(torch.tensor([[1.0, 2.0], [3.0, 4.0]])) == pytest.approx(1.64)
    # One outlier among zeros: [0, 0, 0, 10] -> E[d^2] = 18.75, E[d^4] = 820.3125, ratio 7/3.
    assert kurtosis(torch.tensor([0.0, 0.0, 0.0, 10.0])) == pytest.approx(7 / 3)
    assert kurtosis(torch.full((5,), 2.0)) == 0.0


def test_block_statistics_leave_out_the_embedding_and_name_the_peak_block():
    model, probe = micro(), tokens(3, 16)
    stats = block_output_statistics(model, probe, batch_size=2)
    assert len(stats["layer_kurtosis"]) == model.config.n_layer
    with torch.no_grad():
        hidden = gpt_probe_forward(model)(probe).hidden
    assert stats["layer_max_abs"] == pytest.approx([float(h.abs().max()) for h in hidden[1:]])
    assert stats["layer_kurtosis"] == pytest.approx([kurtosis(h) for h in hidden[1:]])
    assert stats["max_abs"]["value"] == max(stats["layer_max_abs"])
    assert stats["layer_max_abs"][stats["max_abs"]["layer"]] == stats["max_abs"]["value"]


def test_w8a8_of_a_known_matrix_rounds_rows_and_the_input_to_int8_levels():
    weight = torch.tensor([[1.0, -0.3], [0.2, 0.05]])
    # Row 0: step 1/127, -0.3 * 127 = -38.1 -> -38. Row 1: step 0.2/127, 0.05 / step = 31.75 -> 32.
    expected = torch.tensor([[1.0, -38 / 127], [0.2, 32 * 0.2 / 127]])
    assert torch.allclose(quantize_weight(weight), expected)
    # Per tensor: step 2/127 for [0.5, -2]; 0.5 / step = 31.75 -> 32.
    x = torch.tensor([[0.5, -2.0]])
    assert torch.allclose(quantize_activation(x), torch.tensor([[32 * 2 / 127, -2.0]]))

    linear = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        linear.weight.copy_(weight)
    with w8a8(linear):
        quantized = linear(x)
    assert torch.allclose(quantized, torch.tensor([[32 * 2 / 127, -2.0]]) @ expected.T)
    assert torch.equal(linear.weight, weight)  # the fp32 weights are back
    assert not linear._forward_pre_hooks


def test_w8a8_perplexity_is_relative_to_the_fp32_model_and_leaves_it_unchanged():
    model, probe = micro(), tokens(4, 16)
    before = {name: value.clone() for name, value in model.state_dict().items()}
    result = w8a8_perplexity(model, probe)
    assert result["ratio"] == pytest.approx(result["perplexity_w8a8"] / result["perplexity_fp32"])
    assert result["ratio"] != 1.0  # int8 rounding changed something
    assert all(torch.equal(before[name], value) for name, value in model.state_dict().items())


def last_logits(model, context: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(context[None])[0, -1]


def test_streaming_with_4_sinks_sees_the_first_4_tokens_and_the_window_and_0_sinks_only_the_window():
    # One layer without position encodings: a cached key or value depends on its own token only, so each
    # streaming prediction equals a plain forward over exactly the tokens its cache is meant to hold.
    model = micro(pos_embedding="nope", n_layer=1, block_size=32)
    text = tokens(model.config.block_size, seed=1)
    window = model.config.block_size // 2
    result = streaming_costs(model, text, n_sink=4)
    assert result["window"] == window

    def nll(context_of) -> float:
        losses = [
            -torch.log_softmax(last_logits(model, context_of(p))[:128], -1)[text[p + 1]] for p in range(len(text) - 1)
        ]
        return float(torch.stack(losses).mean())

    def recent(p):
        return text[max(0, p - window + 1) : p + 1]

    def with_sinks(p):
        return text[: p + 1] if p < 4 + window else torch.cat((text[:4], recent(p)))

    full = nll(lambda p: text[: p + 1])
    assert result["perplexity_full"] == pytest.approx(math.exp(full), rel=1e-4)
    assert result["perplexity_keep_0"] == pytest.approx(math.exp(nll(recent)), rel=1e-4)
    assert result["perplexity_keep_4"] == pytest.approx(math.exp(nll(with_sinks)), rel=1e-4)
    assert result["perplexity_keep_0"] != pytest.approx(result["perplexity_keep_4"], rel=1e-4)


def test_sink_costs_gathers_every_column():
    model = micro()
    costs = sink_costs(model, tokens(2, 16), tokens(48, seed=2))
    assert {"kurtosis", "max_abs", "w8a8", "streaming"} <= set(costs)
    assert costs["streaming"]["window"] == 32 and costs["streaming"]["n_tokens"] == 48
