import json

import pytest
import torch
from test_hf_io import save_with_structure
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import processors

from lit_gpt.cli.eval_hf import evaluate_hf_model, main, model_specs, parse
from lit_gpt.core.errors import UserError
from lit_gpt.data.tokenizer import train_bpe
from lit_gpt.hf.compare import model_names
from lit_gpt.hf.io import HFError, import_hf
from lit_gpt.hf.probe import decoder_layers, evaluate_hf, load_hf_causal_lm
from lit_gpt.measurement.analysis import evaluate_gpt

transformers = pytest.importorskip("transformers")

SIZES = dict(vocab_size=320, hidden_size=32, num_hidden_layers=2, num_attention_heads=4)
ARCHITECTURES = {
    "gpt2": lambda: transformers.GPT2LMHeadModel(
        transformers.GPT2Config(
            vocab_size=320, n_embd=32, n_layer=2, n_head=4, n_positions=64, bos_token_id=None, eos_token_id=None
        )
    ),
    "gpt_neox": lambda: transformers.GPTNeoXForCausalLM(
        transformers.GPTNeoXConfig(**SIZES, intermediate_size=64, max_position_embeddings=64)
    ),
    "opt": lambda: transformers.OPTForCausalLM(
        transformers.OPTConfig(**SIZES, ffn_dim=64, max_position_embeddings=64, word_embed_proj_dim=32)
    ),
    "llama": lambda: transformers.LlamaForCausalLM(
        transformers.LlamaConfig(**SIZES, intermediate_size=64, num_key_value_heads=2, max_position_embeddings=64)
    ),
    "bloom": lambda: transformers.BloomForCausalLM(
        transformers.BloomConfig(vocab_size=320, hidden_size=32, n_layer=2, n_head=4)
    ),
    "phi3": lambda: transformers.Phi3ForCausalLM(
        transformers.Phi3Config(
            **SIZES,
            intermediate_size=64,
            num_key_value_heads=2,
            max_position_embeddings=64,
            eos_token_id=2,
            pad_token_id=0,
        )
    ),
    # keys pass a k_norm after k_proj, which changes their norms
    "qwen3": lambda: transformers.Qwen3ForCausalLM(
        transformers.Qwen3Config(
            **SIZES, intermediate_size=64, num_key_value_heads=2, head_dim=8, max_position_embeddings=64
        )
    ),
    # its fused query_key_value has a layout of its own, so no reader knows its keys and values
    "falcon": lambda: transformers.FalconForCausalLM(transformers.FalconConfig(**SIZES)),
}
WORDS = "alpha beta gamma delta epsilon zeta eta theta".split()
TEXTS = [" ".join(WORDS[(i * j) % 8] for j in range(80)) for i in range(1, 6)]


def tiny_hf(kind, folder):
    torch.manual_seed(0)
    save_with_structure(ARCHITECTURES[kind]().eval(), folder)
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    return {kind: tiny_hf(kind, root / kind) for kind in ARCHITECTURES}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A BPE tokenizer that adds nothing when it encodes, one that puts <|endoftext|> (id 0) first, a probe."""
    root = tmp_path_factory.mktemp("files")
    (root / "plain").mkdir()
    (root / "with_bos").mkdir()
    train_bpe(TEXTS, 300, root / "plain" / "tokenizer.json")
    templated = HFTokenizer.from_file(str(root / "plain" / "tokenizer.json"))
    templated.post_processor = processors.TemplateProcessing(
        single="<|endoftext|> $A", special_tokens=[("<|endoftext|>", 0)]
    )
    templated.save(str(root / "with_bos" / "tokenizer.json"))
    (root / "probe.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    return root


def probe(n=6, length=24):
    return torch.randint(0, 300, (n, length), generator=torch.Generator().manual_seed(0))


def sink_rates_by_hand(maps, eps, k):
    """Percent of (sequence, layer, head) whose queries at or after key j give it more than eps on average."""
    rates = []
    for j in range(k):
        alphas = torch.stack([attn[:, :, j:, j].mean(dim=-1) for attn in maps])  # (layer, sequence, head)
        rates.append(100.0 * (alphas > eps).float().mean().item())
    return rates


@pytest.mark.parametrize("kind", ["gpt2", "gpt_neox", "opt", "llama", "bloom", "phi3", "qwen3"])
@torch.no_grad()
def test_sink_rates_and_key_value_norms_match_the_models_own_maps_and_cache(folders, kind):
    model = load_hf_causal_lm(folders[kind])
    tokens = probe()
    result = evaluate_hf(model, tokens, eps=0.1, k=3, batch_size=4)
    out = model(tokens, output_attentions=True, output_hidden_states=True, use_cache=True)
    assert [result.sink_rates[f"sink_{j + 1}"] for j in range(3)] == pytest.approx(
        sink_rates_by_hand(out.attentions, 0.1, 3), abs=1e-4
    )
    assert 0 < result.sink_rates["sink_1"] < 100
    assert "unavailable" not in result.about
    for name, cached in (
        ("keys", [layer.keys for layer in out.cache.layers]),
        ("values", [layer.values for layer in out.cache.layers]),
    ):
        by_hand = torch.stack([x.norm(dim=-1).mean(dim=1).mean(dim=0) for x in cached])  # RoPE keeps norms
        torch.testing.assert_close(torch.tensor(result.norms[name]), by_hand, atol=1e-4, rtol=1e-4)
    # every hidden state but the last, which transformers returns after the final norm
    by_hand = torch.stack([h.norm(dim=-1).mean(dim=0) for h in out.hidden_states[:-1]])
    torch.testing.assert_close(torch.tensor(result.norms["hidden"][:-1]), by_hand, atol=1e-4, rtol=1e-4)


@torch.no_grad()
def test_the_open_source_eval_equals_ours_on_an_imported_llama(folders):
    tokens = probe(n=8, length=32)
    # eps 0.1: this random model's heads spread across that threshold, so the rates are not trivially 0
    theirs = evaluate_hf(load_hf_causal_lm(folders["llama"]), tokens, eps=0.1, batch_size=3)
    ours = evaluate_gpt(import_hf(folders["llama"])[0], tokens, eps=0.1, batch_size=3)
    assert 0 < ours.sink_rates["sink_1"] < 100
    assert theirs.sink_rates == ours.sink_rates and theirs.layer_sink_rates == ours.layer_sink_rates
    for key, alphas in ours.layer_mean_alpha.items():
        assert theirs.layer_mean_alpha[key] == pytest.approx(alphas, abs=1e-6)
    assert theirs.loss == pytest.approx(ours.loss, abs=1e-5)
    for name in ("hidden", "keys", "values"):
        torch.testing.assert_close(
            torch.tensor(theirs.norms[name]), torch.tensor(ours.norms[name]), atol=1e-4, rtol=1e-5
        )
    for stat, values in ours.massive_activations.items():
        torch.testing.assert_close(
            torch.tensor(theirs.massive_activations[stat]), torch.tensor(values), atol=1e-4, rtol=1e-5
        )


def test_a_model_without_a_list_of_its_layers_is_one_clear_error(folders):
    model = load_hf_causal_lm(folders["gpt2"])
    model.config.num_hidden_layers = 5
    with pytest.raises(HFError, match="GPT2LMHeadModel keeps no list of num_hidden_layers=5 decoder layers"):
        decoder_layers(model)


def cli(folder, tokenizer, files, tmp_path, *extra):
    out = tmp_path / "result.json"
    evaluate_hf_model(
        **parse(
            [
                "--model",
                str(folder),
                "--tokenizer",
                str(tokenizer),
                "--probe",
                str(files / "probe.jsonl"),
                "--length",
                "16",
                "--json",
                str(out),
                *extra,
            ]
        )
    )
    return json.loads(out.read_text())


def test_the_command_writes_table_json_and_plots(folders, files, tmp_path, capsys):
    result = cli(folders["gpt2"], files / "plain", files, tmp_path, "--plots", str(tmp_path / "plots"))
    assert result["n_sequences"] == 5 and result["architecture"] == "GPT2LMHeadModel" and result["bos"] is False
    assert "Sink_1" in capsys.readouterr().out
    assert len(list((tmp_path / "plots").glob("*.png"))) == 5


@pytest.mark.parametrize(
    "tokenizer, add_bos, bos",
    [("plain", "auto", False), ("with_bos", "auto", True), ("with_bos", "false", False), ("with_bos", "true", True)],
)
def test_add_bos_follows_the_tokenizer_unless_told(folders, files, tmp_path, tokenizer, add_bos, bos):
    assert cli(folders["gpt2"], files / tokenizer, files, tmp_path, "--add_bos", add_bos)["bos"] is bos


def test_the_tokenizer_config_can_ask_for_a_bos_and_name_it(folders, files, tmp_path):
    (tmp_path / "tokenizer.json").write_bytes((files / "plain" / "tokenizer.json").read_bytes())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"add_bos_token": True, "bos_token": "<|endoftext|>"}))
    assert cli(folders["gpt2"], tmp_path, files, tmp_path)["bos"] is True


def test_add_bos_true_for_a_model_without_one_is_one_error_line(folders, files, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "--model",
                str(folders["gpt2"]),
                "--tokenizer",
                str(files / "plain"),
                "--probe",
                str(files / "probe.jsonl"),
                "--length",
                "16",
                "--add_bos",
                "true",
            ]
        )
    err = capsys.readouterr().err
    assert exit_info.value.code == 1 and err.count("\n") == 1
    assert err.startswith(f"error: --add_bos true: {folders['gpt2']} declares no BOS token")
    assert err.rstrip().endswith("pass --add_bos false")


def test_several_models_are_compared_and_keys_a_model_hides_are_named(folders, files, tmp_path, capsys):
    main(
        [
            "--model",
            str(folders["gpt2"]),
            "--model",
            str(folders["falcon"]),
            "--tokenizer",
            str(files / "plain"),
            "--probe",
            str(files / "probe.jsonl"),
            "--length",
            "16",
            "--json",
            str(tmp_path / "out" / "sinks.json"),
            "--plots",
            str(tmp_path / "plots"),
        ]
    )
    printed = capsys.readouterr().out
    assert "norms of keys and values unavailable: FalconForCausalLM (model_type 'falcon')" in printed
    assert "| model | architecture | BOS | Sink_1 (%) |" in printed and "| falcon | FalconForCausalLM | no |" in printed
    falcon = json.loads((tmp_path / "out" / "falcon" / "sinks.json").read_text())
    assert falcon["norms"]["keys"] is None and "FalconForCausalLM" in falcon["unavailable"]["values"]
    assert len(falcon["norms"]["hidden"]) == 3 and 0 <= falcon["sink_rates"]["sink_1"] <= 100
    assert (tmp_path / "out" / "gpt2" / "sinks.json").is_file()
    rows = json.loads((tmp_path / "out" / "comparison.json").read_text())
    assert [row["model"] for row in rows] == ["gpt2", "falcon"] and rows[0]["max_top1_over_median"] > 1
    assert sorted(p.name for p in (tmp_path / "plots").glob("comparison.*")) == [
        "comparison.json",
        "comparison.md",
        "comparison.png",
    ]
    assert len(list((tmp_path / "plots" / "falcon").glob("*.png"))) == 5


def test_models_come_from_repeated_flags_and_a_list_file(tmp_path):
    assert parse(["--model", "a", "--model", "b/c"])["model"] == ["a", "b/c"]
    listed = tmp_path / "models.txt"
    listed.write_text("# open models\nowner/one\n\n  ./local  \n")
    assert model_specs("first", listed) == ["first", "owner/one", "./local"]
    with pytest.raises(UserError, match="no model to evaluate"):
        model_specs(None, None)


def test_model_names_are_folder_names_made_distinct(tmp_path):
    for run in ("a", "b"):
        (tmp_path / run / "hf").mkdir(parents=True)
    assert model_names([str(tmp_path / "a" / "hf"), str(tmp_path / "b" / "hf"), "owner/llama"]) == [
        "a_hf",
        "b_hf",
        "llama",
    ]
    with pytest.raises(UserError, match="is given twice"):
        model_names([str(tmp_path / "a" / "hf"), str(tmp_path / "a" / "hf") + "/"])
