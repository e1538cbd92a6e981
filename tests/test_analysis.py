import dataclasses

import pytest
import torch
import torch.nn.functional as F

from lit_gpt.measurement.analysis import (
    activation_extremes,
    evaluate_gpt,
    evaluate_probe,
    gpt_probe_forward,
    position_norms,
)
from lit_gpt.measurement.metrics import sink_rates
from lit_gpt.model.config import Config
from lit_gpt.model.gpt import GPT


def micro(**overrides):
    torch.manual_seed(0)
    return GPT(Config.from_name("micro", **overrides)).eval()


def test_position_norms_average_over_sequences_and_heads():
    x = torch.zeros(2, 3, 4)
    x[0, 1, 0], x[1, 1, 0] = 3.0, 4.0  # position 1 norms 3 and 4
    assert position_norms(x).tolist() == [0.0, 7.0, 0.0]  # summed; divided by the count later
    heads = torch.zeros(1, 2, 3, 4)
    heads[0, 0, 2, 0] = 2.0
    assert position_norms(heads).tolist() == [0.0, 0.0, 1.0]


def test_activation_extremes_find_a_planted_massive_activation():
    hidden = torch.randn(2, 8, 16).clamp(-1, 1)
    hidden[0, 0, 3] = -500.0
    stats = activation_extremes(hidden)
    assert stats[0, 0] == 500.0
    assert stats[1, 0] <= 1.0
    assert torch.all(stats[:, 1] >= stats[:, 2]) and torch.all(stats[:, 3] <= stats[:, 2])


def test_probe_forward_hooks_see_the_model_internals():
    model = micro(sink_tokens=2)
    idx = torch.randint(0, 128, (2, 10))
    cache = model.new_cache()
    with torch.no_grad():
        out = gpt_probe_forward(model)(idx)
        logits_cached = model(idx, cache=cache)
    assert len(out.hidden) == model.config.n_layer + 1 and out.hidden[0].shape == (2, 12, 32)
    assert torch.allclose(model.lm_head(model.norm(out.hidden[-1][:, 2:])), out.logits, atol=1e-5)
    assert torch.allclose(out.logits, logits_cached, atol=1e-5)
    for keys, values, layer in zip(out.keys, out.values, cache.layers):
        # the cache holds keys after RoPE, a rotation: norms agree
        assert torch.allclose(keys.norm(dim=-1), layer.k.norm(dim=-1), atol=1e-5)
        assert torch.allclose(values, layer.v, atol=1e-6)


def test_evaluate_gpt_reports_everything_independent_of_batching():
    model = micro(k_bias=True, v_bias=True)
    tokens = torch.randint(0, 128, (6, 16))
    result = evaluate_gpt(model, tokens, batch_size=4)
    whole = evaluate_gpt(model, tokens, batch_size=6)
    assert result.sink_rates == whole.sink_rates
    assert result.loss == pytest.approx(whole.loss, rel=1e-6)
    assert torch.allclose(torch.tensor(result.norms["keys"]), torch.tensor(whole.norms["keys"]))
    with torch.no_grad():
        logits, maps = model(tokens, return_attention=True)
    assert result.loss == pytest.approx(
        float(F.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten())), rel=1e-5
    )
    assert result.sink_rates == sink_rates(maps, n_slots=1)
    assert len(result.layer_sink_rates["sink_star"]) == 2
    assert [len(result.norms[name]) for name in ("hidden", "keys", "values")] == [3, 2, 2]
    assert all(len(row) == 16 for row in result.norms["hidden"])
    assert set(result.massive_activations) == {"top1", "top2", "top3", "median"}
    assert len(result.massive_activations["top1"]) == 3


def test_a_forward_without_keys_and_values_still_reports_the_rest():
    model = micro()
    tokens = torch.randint(0, 128, (4, 16))
    forward = gpt_probe_forward(model)
    result = evaluate_probe(lambda idx: dataclasses.replace(forward(idx), keys=None, values=None), tokens)
    full = evaluate_probe(forward, tokens)
    assert result.norms["keys"] is None and result.norms["values"] is None
    assert result.norms["hidden"] == full.norms["hidden"] and result.sink_rates == full.sink_rates


def test_prefix_lm_loss_ignores_the_first_predictions():
    model = micro(prefix_tokens=4)
    tokens = torch.randint(0, 128, (2, 8))
    with torch.no_grad():
        logits = model(tokens)
    expected = F.cross_entropy(logits[:, 3:-1].flatten(0, 1), tokens[:, 4:].flatten())
    assert evaluate_gpt(model, tokens).loss == pytest.approx(float(expected), rel=1e-5)
