import pytest
import torch

from lit_gpt.measurement.metrics import SinkAccumulator, alphas, layer_sink_rates, normalize_rows, sink_rates
from lit_gpt.model.config import Config
from lit_gpt.model.gpt import GPT


def first_token_map(batch=2, heads=3, length=16):
    attn = torch.zeros(batch, heads, length, length)
    attn[..., 0] = 1.0
    return attn


def causal_uniform_map(batch=2, heads=3, length=16):
    tril = torch.tril(torch.ones(length, length))
    return (tril / tril.sum(-1, keepdim=True)).expand(batch, heads, -1, -1).clone()


def with_slots(real, slot_columns):
    """Prepend slot columns (B, H, T, S) to a real-token map."""
    return torch.cat((slot_columns, real), dim=-1)


def test_all_attention_on_first_token_is_a_full_sink():
    rates = sink_rates([first_token_map(), first_token_map()], n_slots=0)
    assert rates["sink_1"] == 100.0
    assert all(rates[f"sink_{k}"] == 0.0 for k in range(2, 11))
    assert "sink_star" not in rates


@pytest.mark.parametrize("length", [4, 16, 64])
def test_uniform_attention_has_no_sink_when_longer_than_one_over_eps(length):
    eps = 0.3
    full_uniform = torch.full((1, 2, length, length), 1.0 / length)
    assert length > 1 / eps
    assert set(sink_rates([full_uniform], eps=eps).values()) == {0.0}
    if length >= 16:  # causal uniform: alpha_1 = H_T / T, below eps only for longer sequences
        assert sink_rates([causal_uniform_map(length=length)], eps=eps)["sink_1"] == 0.0


def test_alpha_matches_hand_computation():
    # T = 3: alpha_1 = (1 + .5 + .2) / 3, alpha_2 = (.5 + .3) / 2, alpha_3 = .5 / 1
    attn = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.2, 0.3, 0.5]])[None, None]
    got = alphas(attn, k=10)["tokens"][0, 0]
    assert torch.allclose(got, torch.tensor([1.7 / 3, 0.4, 0.5]), atol=1e-6)
    rates = sink_rates([attn], eps=0.45)
    assert rates == {"sink_1": 100.0, "sink_2": 0.0, "sink_3": 100.0}


def test_slot_map_reports_sink_star_and_first_token_separately():
    batch, heads, length = 2, 4, 12
    slot = torch.zeros(batch, heads, length, 1)
    slot[:, :2] = 0.9  # half the heads put 90% on the slot, the rest on the first token
    real = torch.zeros(batch, heads, length, length)
    real[:, :2, :, 0] = 0.1
    real[:, 2:, :, 0] = 1.0
    rates = sink_rates([with_slots(real, slot)], n_slots=1)
    assert rates["sink_star"] == 50.0
    assert rates["sink_1"] == 50.0


def test_several_slots_are_reported_together_and_one_by_one():
    length = 8
    slots = torch.zeros(1, 1, length, 2)
    slots[..., 0], slots[..., 1] = 0.2, 0.2
    real = torch.zeros(1, 1, length, length)
    real[..., 0] = 0.6
    rates = sink_rates([with_slots(real, slots)], n_slots=2)
    assert rates["sink_star"] == 100.0  # 0.4 together
    assert rates["sink_star_1"] == rates["sink_star_2"] == 0.0
    assert rates["sink_1"] == 100.0


def test_sink_tokens_are_treated_like_slots():
    length = 8
    sink = torch.full((1, 2, length, 2), 0.25)
    real = torch.zeros(1, 2, length, length)
    real[..., 0] = 0.5
    rates = sink_rates([torch.cat((sink, real), dim=-1)], n_slots=0, n_sink_tokens=2)
    assert rates["sink_token"] == 100.0
    assert rates["sink_1"] == 100.0


def test_unnormalised_maps_are_normalised_per_row_first():
    base = causal_uniform_map(length=8)
    base[..., 0] += 3.0 * torch.tril(torch.ones(8, 8))[:, 0]  # heavy first column
    normalised = base / base.sum(-1, keepdim=True)
    for scale in (0.01, 1.0, 50.0):
        assert sink_rates([base * scale]) == sink_rates([normalised])
    signed = normalised.clone()
    signed[..., 1:] *= -1  # a linear kernel: weights of either sign, normalised by |A|
    assert sink_rates([signed]) == sink_rates([normalised])
    assert torch.allclose(normalize_rows(base * 7).sum(-1), torch.ones(2, 3, 8), atol=1e-6)


def test_per_layer_rates_and_accumulation_over_batches():
    maps = [first_token_map(), causal_uniform_map()]
    assert layer_sink_rates(maps) == [100.0, 0.0]
    assert sink_rates(maps)["sink_1"] == 50.0

    acc = SinkAccumulator()
    acc.update([m[:1] for m in maps])
    acc.update([m[1:] for m in maps])
    assert acc.rates() == sink_rates(maps)
    assert acc.layer_rates()["sink_1"] == [100.0, 0.0]
    assert acc.mean_alphas()["sink_1"][0] == pytest.approx(1.0)


def test_short_sequences_report_only_existing_positions():
    assert sorted(sink_rates([first_token_map(length=4)])) == ["sink_1", "sink_2", "sink_3", "sink_4"]


def test_layout_mismatch_is_an_error():
    with pytest.raises(ValueError, match="real keys"):
        sink_rates([first_token_map()], n_slots=1)
    with pytest.raises(ValueError, match="no attention maps"):
        SinkAccumulator().rates()


def test_model_maps_have_the_layout_the_metric_expects():
    torch.manual_seed(0)
    config = Config.from_name("micro", k_bias=True, v_bias=True, sink_tokens=2)
    model = GPT(config).eval()
    idx = torch.randint(0, config.vocab_size, (2, 12))
    with torch.no_grad():
        _, maps = model(idx, return_attention=True)
    rates = sink_rates(maps, n_slots=config.n_slots, n_sink_tokens=config.sink_tokens)
    assert {"sink_1", "sink_10", "sink_star", "sink_token"} <= set(rates)
    assert all(0.0 <= v <= 100.0 for v in rates.values())
