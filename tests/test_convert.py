import pytest
import torch

from lit_gpt.config import ConfigError
from lit_gpt.convert import config_from_hf, from_hf_state_dict, hf_config, to_hf_state_dict
from lit_gpt.model import GPT
from variants import micro, tokens

transformers = pytest.importorskip("transformers")

LLAMAS = {"llama": {}, "gqa": dict(n_query_groups=2), "geglu": dict(mlp="geglu"), "rope_base": dict(rope_base=500)}


def hf_twin(model: GPT):
    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**hf_config(model.config))).eval()
    missing, unexpected = hf.load_state_dict(to_hf_state_dict(model), strict=False)
    assert not unexpected and all("rotary" in name for name in missing)
    return hf


@pytest.mark.parametrize("overrides", LLAMAS.values(), ids=LLAMAS.keys())
@torch.no_grad()
def test_default_model_is_a_real_llama(overrides):
    torch.manual_seed(0)
    model = GPT(micro(**overrides)).eval()
    idx = tokens(length=16)
    torch.testing.assert_close(hf_twin(model)(idx).logits, model(idx), atol=1e-4, rtol=0)


def test_round_trip_through_hf_names():
    torch.manual_seed(0)
    model = GPT(micro(n_query_groups=1))
    config = config_from_hf(hf_config(model.config), vocab_size=model.config.vocab_size)
    assert config.asdict() == {**model.config.asdict(), "name": "custom"}
    restored = GPT(config)
    restored.load_state_dict(from_hf_state_dict(to_hf_state_dict(model), config))
    for (name, a), b in zip(model.state_dict().items(), restored.state_dict().values()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("overrides", [dict(attn_score="sigmoid"), dict(window_size=8), dict(sink_tokens=1),
                                       dict(mlp="gelu"), dict(k_bias=True, v_bias=True)])
def test_variants_that_are_not_a_llama_are_refused(overrides):
    key = next(iter(overrides))
    with pytest.raises(ConfigError, match=f"is not a LLaMA; differs in .*{key}="):
        to_hf_state_dict(GPT(micro(**overrides)))


def test_import_refuses_weights_it_would_drop_and_accepts_tied_embeddings():
    torch.manual_seed(0)
    model = GPT(micro())
    hf = to_hf_state_dict(model)
    with pytest.raises(ConfigError, match="no place for: model.layers.0.self_attn.q_proj.bias"):
        from_hf_state_dict({**hf, "model.layers.0.self_attn.q_proj.bias": torch.zeros(32)}, model.config)
    with pytest.raises(ConfigError, match="attention_bias set"):
        config_from_hf({**hf_config(model.config), "attention_bias": True})
    del hf["lm_head.weight"]
    tied = from_hf_state_dict(hf, model.config)
    assert torch.equal(tied["lm_head.weight"], model.wte.weight)
