"""GPT-2 in our model: the same function as transformers' `GPT2LMHeadModel`, both ways
(`lit_gpt.hf.families.gpt2` for the mapping, `lit_gpt.hf.io` for the folders)."""

import json

import pytest
import torch
from variants import micro, tokens

from lit_gpt.hf.families.gpt2 import config_from_hf, from_hf_state_dict, hf_config, to_hf_state_dict
from lit_gpt.hf.io import VOCAB_KEY, HFError, export_hf, import_hf
from lit_gpt.model.config import GPT2_STRUCTURE, Config, ConfigError
from lit_gpt.model.gpt import GPT

transformers = pytest.importorskip("transformers")

HF_GPT2S = {
    "gpt2": {},
    "untied_relu": dict(tie_word_embeddings=False, activation_function="relu", n_inner=48),
    "torch_tanh_gelu": dict(activation_function="gelu_pytorch_tanh", layer_norm_epsilon=1e-6),
}
OUR_GPT2S = {"gpt2": {}, "untied_exact_gelu": dict(tie_embeddings=False, mlp="gelu")}


def randomise(model: torch.nn.Module) -> None:
    """Weights, biases and norm gains of every size: both sides start biases at zero and gains at one, which
    would hide a bias or gain mapped to the wrong place."""
    torch.manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(std=0.3 if param.dim() == 2 else 0.1)


def tiny_hf_gpt2(folder, **overrides):
    config = transformers.GPT2Config(
        vocab_size=320, n_positions=64, n_embd=32, n_layer=2, n_head=4, bos_token_id=0, eos_token_id=0, **overrides
    )
    model = transformers.GPT2LMHeadModel(config).eval()
    randomise(model)
    model.save_pretrained(folder)
    return model


def our_gpt2(**overrides) -> GPT:
    model = GPT(micro(**{**GPT2_STRUCTURE, "vocab_size": 100, **overrides})).eval()
    randomise(model)
    return model


def hf_from(folder):
    return transformers.AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()


@pytest.mark.parametrize("overrides", HF_GPT2S.values(), ids=HF_GPT2S.keys())
@torch.no_grad()
def test_a_hf_gpt2_imports_with_the_same_logits(tmp_path, overrides):
    hf = tiny_hf_gpt2(tmp_path, **overrides)
    model, config = import_hf(tmp_path)
    assert {key: getattr(config, key) for key in ("norm_class", "pos_embedding", "bias")} == {
        "norm_class": "layernorm",
        "pos_embedding": "learnable",
        "bias": True,
    }
    assert config.tie_embeddings == overrides.get("tie_word_embeddings", True)
    assert (config.block_size, config.intermediate_size) == (64, overrides.get("n_inner", 128))
    idx = tokens(length=64, vocab=320)
    torch.testing.assert_close(model(idx), hf(idx).logits, atol=1e-5, rtol=0)


@pytest.mark.parametrize("overrides", OUR_GPT2S.values(), ids=OUR_GPT2S.keys())
@torch.no_grad()
def test_our_gpt2_exports_runs_in_transformers_with_the_same_logits_and_imports_back_unchanged(tmp_path, overrides):
    model = our_gpt2(**overrides)
    out = export_hf(model, tmp_path / "hf")
    hf = json.loads((out / "config.json").read_text())
    assert (hf["model_type"], hf["n_positions"], hf["vocab_size"], hf[VOCAB_KEY]) == ("gpt2", 64, 128, 100)
    assert hf["activation_function"] == {"gelu_tanh": "gelu_pytorch_tanh", "gelu": "gelu"}[model.config.mlp]
    idx = tokens(length=64, vocab=100)
    torch.testing.assert_close(hf_from(out)(idx).logits, model(idx), atol=1e-5, rtol=0)

    back, config = import_hf(out)
    assert config == model.config.replace(name="custom")
    assert back.state_dict().keys() == model.state_dict().keys()
    for name, tensor in model.state_dict().items():
        assert torch.equal(back.state_dict()[name], tensor), name


def test_conv1d_weights_are_the_transpose_and_c_attn_is_q_k_v():
    model = our_gpt2()
    hf = to_hf_state_dict(model)
    qkv = model.blocks[0].attn.qkv
    assert torch.equal(hf["transformer.h.0.attn.c_attn.weight"], qkv.weight.T)
    q, k, v = hf["transformer.h.0.attn.c_attn.bias"].split(32)
    assert torch.equal(k, qkv.bias[32:64]) and torch.equal(
        hf["transformer.h.1.mlp.c_fc.weight"], model.blocks[1].mlp.up_proj.weight.T
    )
    assert "lm_head.weight" not in hf  # tied, as transformers saves GPT-2


@torch.no_grad()
def test_openai_style_names_and_mask_buffers_import():
    """OpenAI's `gpt2` files name tensors without `transformer.` and store each layer's causal mask."""
    model = our_gpt2()
    original = {name.removeprefix("transformer."): tensor for name, tensor in to_hf_state_dict(model).items()}
    original.update({f"h.{i}.attn.bias": torch.ones(1, 1, 64, 64).tril() for i in range(2)})
    restored = GPT(model.config)
    restored.load_state_dict(from_hf_state_dict(original, model.config))
    idx = tokens(length=16, vocab=100)
    assert torch.equal(restored.eval()(idx), model(idx))


@pytest.mark.parametrize(
    "overrides",
    [
        dict(sink_tokens=1),
        dict(k_bias=True, v_bias=True, head_bias=True),
        dict(attn_score="sigmoid", attn_normalize="none"),
        dict(window_size=8),
        dict(prefix_tokens=2),
        dict(attn_gate="headwise"),
        dict(softmax_off_by_one=True),
        dict(norm_position="post"),
        dict(bias=False),
        dict(norm_class="rmsnorm"),
        dict(mlp="swiglu"),
        dict(n_query_groups=2),
    ],
)
def test_variants_hf_gpt2_cannot_express_are_refused_without_writing(tmp_path, overrides):
    model = GPT(micro(**{**GPT2_STRUCTURE, **overrides}))
    with pytest.raises(ConfigError, match=f"is not a GPT-2; differs in .*{next(iter(overrides))}="):
        export_hf(model, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(scale_attn_by_inverse_layer_idx=True), "scale_attn_by_inverse_layer_idx=True: this GPT-2's attention"),
        (dict(scale_attn_weights=False), "scale_attn_weights=False"),
        (dict(activation_function="quick_gelu"), "activation_function='quick_gelu' has no MLP here"),
        (dict(tie_word_embeddings="yes"), "tie_word_embeddings must be true or false, got 'yes'"),
    ],
)
def test_hf_gpt2_configs_computing_something_else_are_refused(change, match):
    hf = hf_config(Config.from_name("gpt2_tiny"))
    with pytest.raises(ConfigError, match=match):
        config_from_hf({**hf, **change})


def test_a_tied_gpt2_whose_head_differs_from_its_embedding_is_refused(tmp_path):
    tiny_hf_gpt2(tmp_path, tie_word_embeddings=False)
    hf = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**hf, "tie_word_embeddings": True}))
    with pytest.raises(
        HFError, match="lm_head.weight differs from transformer.wte.weight although tie_word_embeddings is set"
    ):
        import_hf(tmp_path)


def test_other_model_types_are_refused_naming_the_open_model_evaluation(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "falcon", "vocab_size": 64}))
    with pytest.raises(
        ConfigError,
        match="model_type='falcon' model; only LLaMA and GPT-2 folders can be imported "
        r"\(eval_sink_open_source.py",
    ):
        import_hf(tmp_path)


def test_gpt2_small_exports_the_config_of_hf_gpt2():
    ours = hf_config(Config.from_name("gpt2_small"))
    theirs = transformers.GPT2Config().to_dict()
    same = (
        "n_positions",
        "n_embd",
        "n_layer",
        "n_head",
        "layer_norm_epsilon",
        "tie_word_embeddings",
        "scale_attn_weights",
        "scale_attn_by_inverse_layer_idx",
    )
    assert {key: ours[key] for key in same} == {key: theirs[key] for key in same}
    assert (ours["vocab_size"], theirs["vocab_size"], ours["n_inner"]) == (50304, 50257, 4 * 768)
