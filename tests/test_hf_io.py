import json
import time
from pathlib import Path

import pytest
import torch

from lit_gpt.analysis import evaluate_gpt
from lit_gpt.config import Config, ConfigError
from lit_gpt.errors import UserError
from lit_gpt.hf_io import HFError, evaluate_hf, export_hf, import_hf, load_hf_causal_lm, resolve_model_dir
from lit_gpt.model import GPT

transformers = pytest.importorskip("transformers")
ROOT = Path(__file__).resolve().parents[1]


def tiny_hf_llama(folder, tie=False, rope_parameters=None):
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=320, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                      tie_word_embeddings=tie, rope_parameters=rope_parameters)
    model = transformers.LlamaForCausalLM(config).eval()
    with torch.no_grad():  # HF's init is tiny; larger weights give attention maps with structure
        for param in model.parameters():
            if param.dim() == 2:
                param.normal_(std=0.3)
    model.save_pretrained(folder)
    return model


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_llama")
    tiny_hf_llama(folder)
    return folder


def probe(n=6, length=24):
    return torch.randint(0, 300, (n, length), generator=torch.Generator().manual_seed(0))


@torch.no_grad()
def test_import_of_a_hf_llama_gives_the_same_logits(hf_dir):
    model, config = import_hf(hf_dir)
    assert (config.n_layer, config.n_head, config.n_query_groups, config.padded_vocab_size) == (2, 4, 2, 320)
    hf = load_hf_causal_lm(hf_dir)
    idx = probe()
    torch.testing.assert_close(model(idx), hf(idx).logits, atol=1e-4, rtol=0)


def test_llamas_with_biases_are_refused(tmp_path):
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                      num_attention_heads=2, attention_bias=True)
    transformers.LlamaForCausalLM(config).save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match="bias"):
        import_hf(tmp_path)


@torch.no_grad()
def test_tied_embeddings_import(tmp_path):
    hf = tiny_hf_llama(tmp_path, tie=True)
    model, _ = import_hf(tmp_path)
    torch.testing.assert_close(model(probe()), hf(probe()).logits, atol=1e-4, rtol=0)


@torch.no_grad()
def test_export_loads_in_hf_with_the_same_logits_and_imports_back(tmp_path):
    torch.manual_seed(0)
    model = GPT(Config.from_name("micro", n_query_groups=2, vocab_size=100)).eval()
    ckpt = tmp_path / "iter-000001-ckpt.pth"
    torch.save({"model": model.state_dict(), "config": model.config.asdict(), "train": {}}, ckpt)
    out = export_hf(ckpt, tmp_path / "hf")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    hf = transformers.AutoModelForCausalLM.from_pretrained(out, attn_implementation="eager")
    idx = torch.randint(0, 100, (2, 20))
    torch.testing.assert_close(hf(idx).logits, model(idx), atol=1e-4, rtol=0)

    back, config = import_hf(out)
    assert config.vocab_size == 100 and config.padded_vocab_size == model.config.padded_vocab_size
    for (name, a), b in zip(model.state_dict().items(), back.state_dict().values()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("overrides", [dict(attn_score="sigmoid", attn_normalize="none"), dict(window_size=8),
                                       dict(k_bias=True, v_bias=True), dict(sink_tokens=1), dict(prefix_tokens=2)])
def test_variants_hf_cannot_express_are_refused_without_writing(tmp_path, overrides):
    model = GPT(Config.from_name("micro", **overrides))
    with pytest.raises(ConfigError, match="is not a LLaMA"):
        export_hf(model, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_hub_ids_fail_fast_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    start = time.monotonic()
    with pytest.raises(HFError, match="unreachable"):
        resolve_model_dir("someone/not-cached-model")
    assert time.monotonic() - start < 15
    with pytest.raises(HFError, match="neither a model folder nor a hub id"):
        resolve_model_dir(tmp_path / "missing" / "deep")


def test_open_source_eval_matches_our_metric_on_the_converted_model(hf_dir):
    tokens = probe(n=8, length=32)
    # eps 0.1: this random model's heads spread across that threshold, so the rates are not trivially 0
    theirs = evaluate_hf(load_hf_causal_lm(hf_dir), tokens, eps=0.1, batch_size=3)
    ours = evaluate_gpt(import_hf(hf_dir)[0], tokens, eps=0.1, batch_size=3)
    assert 0 < ours["sink_rates"]["sink_1"] < 100
    assert theirs["sink_rates"] == ours["sink_rates"]
    for key, alphas in ours["layer_mean_alpha"].items():
        assert theirs["layer_mean_alpha"][key] == pytest.approx(alphas, abs=1e-6)
    assert theirs["layer_sink_rates"] == ours["layer_sink_rates"]
    assert theirs["loss"] == pytest.approx(ours["loss"], abs=1e-5)
    for name in ("hidden", "keys", "values"):
        torch.testing.assert_close(torch.tensor(theirs["norms"][name]), torch.tensor(ours["norms"][name]),
                                   atol=1e-4, rtol=1e-5)
    for stat, values in ours["massive_activations"].items():
        torch.testing.assert_close(torch.tensor(theirs["massive_activations"][stat]), torch.tensor(values),
                                   atol=1e-4, rtol=1e-5)


def test_open_source_cli_writes_json_and_plots(hf_dir, tmp_path):
    from jsonargparse import CLI

    from lit_gpt.tokenizer import train_bpe

    words = "alpha beta gamma delta epsilon zeta eta theta".split()
    texts = [" ".join(words[(i * j) % 8] for j in range(80)) for i in range(1, 6)]
    train_bpe(texts, 300, tmp_path / "tokenizer.json")
    probe_file = tmp_path / "probe.jsonl"
    probe_file.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    from lit_gpt.cli.eval_hf import evaluate_hf_model

    out = tmp_path / "result.json"
    CLI(evaluate_hf_model, as_positional=False,
        args=["--model", str(hf_dir), "--tokenizer", str(tmp_path / "tokenizer.json"), "--probe", str(probe_file),
              "--length", "32", "--json", str(out), "--plots", str(tmp_path / "plots")])
    result = json.loads(out.read_text())
    assert result["n_sequences"] == 5 and "sink_1" in result["sink_rates"]
    assert len(list((tmp_path / "plots").glob("*.png"))) == 5


ROPE_SCALINGS = {
    "linear": {"rope_type": "linear", "factor": 2.0},
    # original_max_position_embeddings 16 puts the 64-token probe's wavelengths in all three llama3 bands.
    "llama3": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 16},
}


def to_legacy_form(folder):
    """Rewrite config.json as transformers 4.x saved it: `rope_theta` + `rope_scaling` with a `type` key."""
    path = folder / "config.json"
    hf = json.loads(path.read_text())
    rope = hf.pop("rope_parameters")
    hf["rope_theta"] = rope.pop("rope_theta")
    rope["type"] = rope.pop("rope_type")
    hf["rope_scaling"] = rope
    path.write_text(json.dumps(hf))


@pytest.mark.parametrize("kind", list(ROPE_SCALINGS))
@torch.no_grad()
def test_scaled_rope_imports_with_hf_logits_in_both_config_forms(tmp_path, kind):
    hf = tiny_hf_llama(tmp_path, rope_parameters={"rope_theta": 500000.0, **ROPE_SCALINGS[kind]})
    idx = torch.randint(0, 300, (2, 60), generator=torch.Generator().manual_seed(1))
    expected = hf(idx).logits
    model, config = import_hf(tmp_path)
    assert config.rope_scaling == kind and config.rope_base == 500000.0 and isinstance(config.rope_base, float)
    torch.testing.assert_close(model(idx), expected, atol=1e-4, rtol=0)
    to_legacy_form(tmp_path)
    model, legacy = import_hf(tmp_path)
    assert legacy == config
    torch.testing.assert_close(model(idx), expected, atol=1e-4, rtol=0)
    plain, _ = import_hf_without_scaling(tmp_path)
    assert (plain(idx) - expected).abs().max() > 1e-4  # the scaling matters on this input


def import_hf_without_scaling(folder):
    hf = json.loads((folder / "config.json").read_text())
    hf.pop("rope_scaling")
    (folder / "config.json").write_text(json.dumps(hf))
    return import_hf(folder)


@pytest.mark.parametrize("kind", list(ROPE_SCALINGS))
@torch.no_grad()
def test_scaled_rope_round_trips_through_export(tmp_path, kind):
    tiny_hf_llama(tmp_path / "hf", rope_parameters={"rope_theta": 123456.5, **ROPE_SCALINGS[kind]})
    model, config = import_hf(tmp_path / "hf")
    export_hf(model, tmp_path / "out")
    again, config_again = import_hf(tmp_path / "out")
    assert config_again == config and config_again.rope_base == 123456.5
    idx = probe()
    torch.testing.assert_close(again(idx), model(idx), atol=0, rtol=0)
    torch.testing.assert_close(load_hf_causal_lm(tmp_path / "out")(idx).logits, model(idx), atol=1e-4, rtol=0)


@pytest.mark.parametrize("rope, match", [
    ({"rope_type": "yarn", "factor": 4.0}, "rope_type='yarn' is not supported"),
    ({"type": "dynamic", "factor": 2.0}, "rope_type='dynamic' is not supported"),
    ({"rope_type": "linear"}, "needs factor"),
    ({"rope_type": "linear", "factor": 2.0, "beta": 3}, "RoPE parameters beta"),
])
def test_rope_scalings_we_cannot_compute_exactly_are_refused(hf_dir, tmp_path, rope, match):
    hf = json.loads((hf_dir / "config.json").read_text())
    hf.pop("rope_parameters", None)
    hf.update(rope_theta=10000.0, rope_scaling=rope)
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(hf))
    for name in hf_dir.glob("*.safetensors"):
        (folder / name.name).write_bytes(name.read_bytes())
    with pytest.raises(ConfigError, match=match):
        import_hf(folder)


def damaged_copy(hf_dir, folder, damage):
    folder.mkdir()
    for path in hf_dir.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    damage(folder)
    return folder


def _rewrite_config(folder, **changes):
    hf = json.loads((folder / "config.json").read_text())
    hf.update(changes)
    for key in [k for k, v in changes.items() if v is None]:
        hf.pop(key)
    (folder / "config.json").write_text(json.dumps(hf))


DAMAGES = {
    "config not JSON": (lambda f: (f / "config.json").write_text('{"model_type": "lla'), r"config.json is not valid JSON"),
    "config a list": (lambda f: (f / "config.json").write_text("[1, 2]"), r"config.json holds a list, not a mapping"),
    "config incomplete": (lambda f: _rewrite_config(f, hidden_size=None), r"config.json lacks hidden_size"),
    "weights truncated": (lambda f: (f / "model.safetensors").write_bytes((f / "model.safetensors").read_bytes()[:300]),
                          r"model.safetensors cannot be read"),
    "weights random": (lambda f: (f / "model.safetensors").write_bytes(bytes(range(256)) * 8),
                       r"model.safetensors cannot be read"),
    "shapes disagree": (lambda f: _rewrite_config(f, intermediate_size=48), r"do not fit its config.json"),
    "index names a missing shard": (lambda f: ((f / "model.safetensors").rename(f / "part-1.safetensors"),
                                               (f / "model.safetensors.index.json").write_text(
                                                   json.dumps({"weight_map": {"a": "part-2.safetensors"}}))),
                                    r"part-2.safetensors is missing"),
}


@pytest.mark.parametrize("name", list(DAMAGES))
def test_a_damaged_hf_folder_is_one_clear_error(hf_dir, tmp_path, name):
    damage, match = DAMAGES[name]
    folder = damaged_copy(hf_dir, tmp_path / "model", damage)
    with pytest.raises((HFError, ConfigError), match=match) as info:
        import_hf(folder)
    assert "\n" not in str(info.value)


def test_export_refuses_a_file_in_the_way_and_keeps_other_files(tmp_path):
    model = GPT(Config.from_name("micro"))
    (tmp_path / "taken").write_text("notes")
    with pytest.raises(UserError, match="is a file, not a folder"):
        export_hf(model, tmp_path / "taken")
    assert (tmp_path / "taken").read_text() == "notes"
    out = tmp_path / "hf"
    out.mkdir()
    (out / "README.md").write_text("my model card")
    export_hf(model, out)
    assert (out / "README.md").read_text() == "my model card"
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]


@torch.no_grad()
def test_the_export_command_writes_a_folder_transformers_loads(tmp_path):
    from jsonargparse import CLI

    from lit_gpt.cli.export_hf import export

    config = Config.from_name("micro")
    model = GPT(config).eval()
    ckpt = tmp_path / "iter-000001-ckpt.pth"
    torch.save({"model": model.state_dict(), "config": config.asdict(), "train": {}}, ckpt)
    CLI(export, as_positional=False, args=["--load_from", str(ckpt), "--out_dir", str(tmp_path / "hf")])
    idx = probe(2, 16) % config.vocab_size
    torch.testing.assert_close(load_hf_causal_lm(tmp_path / "hf")(idx).logits[..., :config.vocab_size],
                               model(idx)[..., :config.vocab_size], atol=1e-4, rtol=0)
