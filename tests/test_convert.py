import pytest
import torch
from variants import micro, tokens

from lit_gpt.hf.families.llama import config_from_hf, from_hf_state_dict, hf_config, to_hf_state_dict
from lit_gpt.model.config import ConfigError
from lit_gpt.model.gpt import GPT
from lit_gpt.model.positions import RopeScaling, rope_cos_sin

transformers = pytest.importorskip("transformers")

LLAMAS = {
    "llama": {},
    "gqa": dict(n_query_groups=2),
    "geglu": dict(mlp="geglu"),
    "rope_base": dict(rope_base=500),
    "linear": dict(rope_scaling="linear", rope_scaling_factor=2.0),
    # original 16 with theta 5e5 and head size 8 puts the four frequencies in all three llama3 bands
    "llama3": dict(rope_scaling="llama3", rope_scaling_factor=8.0, rope_original_max_seq_len=16, rope_base=500000.0),
}


def hf_twin(model: GPT):
    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**hf_config(model.config))).eval()
    missing, unexpected = hf.load_state_dict(to_hf_state_dict(model), strict=False)
    tied = {"lm_head.weight"} if model.config.tie_embeddings else set()  # HF's head is then the embedding
    assert not unexpected and all("rotary" in name or name in tied for name in missing)
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


@pytest.mark.parametrize(
    "rope_parameters",
    [
        {"rope_type": "linear", "factor": 4.0},
        {
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        },
    ],
    ids=["linear", "llama3"],
)
def test_scaled_rope_tables_equal_transformers_at_llama3_scale(rope_parameters):
    """At Llama-3.1's own settings (head 128, theta 5e5, 8k original context), far past the tiny models' reach."""
    config = config_from_hf(
        {
            "vocab_size": 64,
            "hidden_size": 512,
            "num_hidden_layers": 1,
            "num_attention_heads": 4,
            "intermediate_size": 64,
            "max_position_embeddings": 131072,
            "rope_parameters": {"rope_theta": 500000.0, **rope_parameters},
        }
    )
    rotary = transformers.models.llama.modeling_llama.LlamaRotaryEmbedding(
        transformers.LlamaConfig(**hf_config(config))
    )
    positions = torch.tensor([0, 1, 7, 100, 4095, 8191, 8192, 30000, 131071])
    theirs = rotary(torch.zeros(1, dtype=torch.float32), positions[None])
    ours = rope_cos_sin(positions, config.head_size, config.rope_base, torch.float32, RopeScaling.from_config(config))
    for a, b in zip(ours, theirs):
        assert torch.equal(a, b[0])


@pytest.mark.parametrize(
    "overrides",
    [
        dict(attn_score="sigmoid"),
        dict(window_size=8),
        dict(sink_tokens=1),
        dict(mlp="gelu"),
        dict(k_bias=True, v_bias=True),
        dict(norm_class="layernorm"),
        dict(bias=True),
        dict(mlp="none"),
    ],
)
def test_variants_that_are_not_a_llama_are_refused(overrides):
    key = next(iter(overrides))
    with pytest.raises(ConfigError, match=f"is not a LLaMA; differs in .*{key}="):
        to_hf_state_dict(GPT(micro(**overrides)))


def test_import_refuses_weights_it_would_drop():
    torch.manual_seed(0)
    model = GPT(micro())
    hf = to_hf_state_dict(model)
    with pytest.raises(ConfigError, match="no place for: model.layers.0.self_attn.q_proj.bias"):
        from_hf_state_dict({**hf, "model.layers.0.self_attn.q_proj.bias": torch.zeros(32)}, model.config)
    with pytest.raises(ConfigError, match="attention_bias set"):
        config_from_hf({**hf_config(model.config), "attention_bias": True})
    with pytest.raises(ConfigError, match="lack 1 tensors the config needs: lm_head.weight"):
        from_hf_state_dict({k: v for k, v in hf.items() if k != "lm_head.weight"}, model.config)


@torch.no_grad()
def test_tied_embeddings_export_without_a_head_and_accept_only_a_head_equal_to_the_embedding():
    torch.manual_seed(0)
    model = GPT(micro(tie_embeddings=True)).eval()
    hf = to_hf_state_dict(model)
    assert "lm_head.weight" not in hf and hf_config(model.config)["tie_word_embeddings"] is True
    config = config_from_hf(hf_config(model.config), vocab_size=model.config.vocab_size)
    assert config.tie_embeddings
    idx = tokens(length=16)
    torch.testing.assert_close(hf_twin(model)(idx).logits, model(idx), atol=1e-4, rtol=0)
    with_head = {**hf, "lm_head.weight": hf["model.embed_tokens.weight"].clone()}
    assert from_hf_state_dict(with_head, config).keys() == model.state_dict().keys()
    with_head["lm_head.weight"][0, 0] += 1
    with pytest.raises(
        ConfigError, match="lm_head.weight differs from model.embed_tokens.weight although tie_word_embeddings is set"
    ):
        from_hf_state_dict(with_head, config)


def test_import_refuses_weights_missing_or_shaped_for_another_config():
    model = GPT(micro(n_query_groups=2))
    hf = to_hf_state_dict(model)
    with pytest.raises(ConfigError, match="lack 1 tensors the config needs: model.layers.1.mlp.up_proj.weight"):
        from_hf_state_dict({k: v for k, v in hf.items() if k != "model.layers.1.mlp.up_proj.weight"}, model.config)
    with pytest.raises(
        ConfigError,
        match=r"other shapes than the config's: model.layers.0.self_attn.k_proj.weight "
        r"\[16, 32\] \(config: \[32, 32\]\)",
    ):
        from_hf_state_dict(hf, micro())  # weights with 2 key/value heads, config with 4
