import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lit_gpt.core.errors import UserError
from lit_gpt.core.files import DiskFullError
from lit_gpt.hf.io import HFError, export_hf, import_hf, resolve_model_dir
from lit_gpt.hf.probe import load_hf_causal_lm
from lit_gpt.model.config import Config, ConfigError
from lit_gpt.model.gpt import GPT

transformers = pytest.importorskip("transformers")
ROOT = Path(__file__).resolve().parents[1]


def tiny_hf_llama(folder, tie=False, rope_parameters=None):
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=320,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=tie,
        rope_parameters=rope_parameters,
    )
    return save_with_structure(transformers.LlamaForCausalLM(config).eval(), folder)


def save_with_structure(model, folder):
    """Redraw the matrices of a random HF model (its init is tiny; larger weights give attention maps with
    structure) and save it into `folder`."""
    with torch.no_grad():
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
    config = transformers.LlamaConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        attention_bias=True,
    )
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
    # checkpoints saved before rope_base became a float hold an int
    old_config = {**model.config.asdict(), "rope_base": 10000}
    torch.save({"model": model.state_dict(), "config": old_config, "train": {}}, ckpt)
    out = export_hf(ckpt, tmp_path / "hf")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "generation_config.json", "model.safetensors"]
    assert json.loads((out / "config.json").read_text())["rope_parameters"]["rope_theta"] == 10000.0
    hf = transformers.AutoModelForCausalLM.from_pretrained(out, attn_implementation="eager")
    idx = torch.randint(0, 100, (2, 20))
    torch.testing.assert_close(hf(idx).logits, model(idx), atol=1e-4, rtol=0)

    back, config = import_hf(out)
    assert config.vocab_size == 100 and config.padded_vocab_size == model.config.padded_vocab_size
    assert config == model.config.replace(name="custom") and isinstance(config.rope_base, float)
    for (name, a), b in zip(model.state_dict().items(), back.state_dict().values()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize(
    "overrides",
    [
        dict(attn_score="sigmoid", attn_normalize="none"),
        dict(window_size=8),
        dict(k_bias=True, v_bias=True),
        dict(sink_tokens=1),
        dict(prefix_tokens=2),
    ],
)
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


ROPE_SCALINGS = {
    "linear": {"rope_type": "linear", "factor": 2.0},
    # original_max_position_embeddings 16 puts the 64-token probe's wavelengths in all three llama3 bands.
    "llama3": {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 16,
    },
}


def legacy_form(hf, type_key):
    """A config as transformers 4.x saved it: `rope_theta` + `rope_scaling`, the type under `type_key`."""
    hf = dict(hf)
    rope = dict(hf.pop("rope_parameters"))
    hf["rope_theta"] = rope.pop("rope_theta")
    rope[type_key] = rope.pop("rope_type")
    hf["rope_scaling"] = rope
    return hf


@pytest.mark.parametrize("kind", list(ROPE_SCALINGS))
@torch.no_grad()
def test_scaled_rope_imports_with_hf_logits_in_both_config_forms(tmp_path, kind):
    hf = tiny_hf_llama(tmp_path, rope_parameters={"rope_theta": 500000.0, **ROPE_SCALINGS[kind]})
    idx = torch.randint(0, 300, (2, 60), generator=torch.Generator().manual_seed(1))
    expected = hf(idx).logits
    model, config = import_hf(tmp_path)
    assert config.rope_scaling == kind and config.rope_base == 500000.0 and isinstance(config.rope_base, float)
    torch.testing.assert_close(model(idx), expected, atol=1e-4, rtol=0)
    saved = json.loads((tmp_path / "config.json").read_text())
    for type_key in ("type", "rope_type"):
        (tmp_path / "config.json").write_text(json.dumps(legacy_form(saved, type_key)))
        model, legacy = import_hf(tmp_path)
        assert legacy == config and isinstance(legacy.rope_base, float)
        torch.testing.assert_close(model(idx), expected, atol=1e-4, rtol=0)
    plain, _ = import_hf_without_scaling(tmp_path)
    assert (plain(idx) - expected).abs().max() > 1e-4  # the scaling matters on this input


def import_hf_without_scaling(folder):
    hf = json.loads((folder / "config.json").read_text())
    hf.pop("rope_scaling")
    (folder / "config.json").write_text(json.dumps(hf))
    return import_hf(folder)


@torch.no_grad()
def test_a_top_level_original_max_position_embeddings_counts_as_in_transformers(tmp_path):
    tiny_hf_llama(tmp_path, rope_parameters={"rope_theta": 500000.0, **ROPE_SCALINGS["llama3"]})
    _rewrite_config(tmp_path, original_max_position_embeddings=32)
    model, config = import_hf(tmp_path)
    assert config.rope_original_max_seq_len == 32
    idx = torch.randint(0, 300, (2, 60), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(model(idx), load_hf_causal_lm(tmp_path)(idx).logits, atol=1e-4, rtol=0)


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


@pytest.mark.parametrize(
    "rope, match",
    [
        ({"rope_type": "yarn", "factor": 4.0}, "rope_type='yarn' is not supported"),
        ({"type": "dynamic", "factor": 2.0}, "rope_type='dynamic' is not supported"),
        ({"rope_type": "linear"}, "needs factor"),
        ({"rope_type": "linear", "factor": 2.0, "beta": 3}, "RoPE parameters beta"),
        ({"rope_type": "linear", "factor": "2"}, "factor must be a number, got '2'"),
        ({"rope_type": "default", "partial_rotary_factor": 0.5}, "partial_rotary_factor != 1"),
        ("linear", "RoPE parameters must be a mapping"),
    ],
)
def test_rope_scalings_we_cannot_compute_exactly_are_refused(hf_dir, tmp_path, rope, match):
    hf = json.loads((hf_dir / "config.json").read_text())
    hf.pop("rope_parameters", None)
    hf.update(rope_theta=10000.0, rope_scaling=rope)
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(hf))
    for name in hf_dir.glob("*.safetensors"):
        (folder / name.name).write_bytes(name.read_bytes())
    with pytest.raises(ConfigError, match=match) as info:
        import_hf(folder)
    assert str(info.value).startswith(f"{folder / 'config.json'}: ")


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


def _as_shards(folder, index):
    (folder / "model.safetensors").rename(folder / "part-1.safetensors")
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))


# name: (damage, the file the message must name besides the folder, what the import error says)
DAMAGES = {
    "config truncated": (
        lambda f: (f / "config.json").write_text('{"model_type": "lla'),
        "config.json",
        r"config.json is not valid JSON \(.*\); re-save the model's config",
    ),
    "config not text": (
        lambda f: (f / "config.json").write_bytes(b"\xff\xfe\x00"),
        "config.json",
        r"config.json is not valid JSON",
    ),
    "config a list": (
        lambda f: (f / "config.json").write_text("[1, 2]"),
        "config.json",
        r"config.json holds a list, not a mapping; re-save",
    ),
    "config incomplete": (
        lambda f: _rewrite_config(f, hidden_size=None),
        "config.json",
        r"config.json lacks hidden_size; it is not a complete LLaMA config: re-save",
    ),
    "config size not an integer": (
        lambda f: _rewrite_config(f, num_attention_heads="4"),
        "config.json",
        r"config.json: num_attention_heads must be a positive integer, got '4'; fix",
    ),
    "weights truncated": (
        lambda f: (f / "model.safetensors").write_bytes((f / "model.safetensors").read_bytes()[:-99]),
        "model.safetensors",
        r"model.safetensors cannot be read .* save the model again",
    ),
    "weights random": (
        lambda f: (f / "model.safetensors").write_bytes(bytes(range(256)) * 8),
        "model.safetensors",
        r"model.safetensors cannot be read .* save the model again",
    ),
    "index names a missing shard": (
        lambda f: _as_shards(f, {"weight_map": {"a": "part-2.safetensors"}}),
        "part-2.safetensors",
        r"part-2.safetensors is missing; .* save it again",
    ),
    "index without weight_map": (
        lambda f: _as_shards(f, {"weight_map": {"a": 3}}),
        "model.safetensors.index.json",
        r"index.json has no weight_map of tensor name -> shard file; re-save",
    ),
    "shapes disagree": (
        lambda f: _rewrite_config(f, intermediate_size=48),
        "config.json",
        r"do not fit its config.json \(.*gate_proj.weight \[64, 32\] \(config: \[48, 32\]\).*re-save",
    ),
    "weights lack a layer": (
        lambda f: _rewrite_config(f, num_hidden_layers=3),
        "config.json",
        r"do not fit its config.json \(HF weights lack 9 tensors .*model.layers.2",
    ),
    "weights have an extra layer": (
        lambda f: _rewrite_config(f, num_hidden_layers=1),
        "config.json",
        r"do not fit its config.json \(HF weights our model has no place for: model",
    ),
}


@pytest.mark.parametrize("name", list(DAMAGES))
def test_a_damaged_hf_folder_is_one_clear_error_on_import_and_evaluation(hf_dir, tmp_path, name):
    """transformers itself would fill missing layers at random and drop extra ones without an error."""
    damage, culprit, match = DAMAGES[name]
    folder = damaged_copy(hf_dir, tmp_path / "model", damage)
    with pytest.raises((HFError, ConfigError), match=match) as imported:
        import_hf(folder)
    with pytest.raises((HFError, ConfigError)) as evaluated:
        load_hf_causal_lm(folder)
    for message in (str(imported.value), str(evaluated.value)):
        assert "\n" not in message and str(folder) in message and culprit in message, message


@pytest.mark.slow
@pytest.mark.parametrize("name", ["config truncated", "weights truncated", "weights lack a layer"])
def test_the_open_model_evaluation_command_prints_exactly_one_error_line(hf_dir, tmp_path, name):
    damage, culprit, _ = DAMAGES[name]
    folder = damaged_copy(hf_dir, tmp_path / "model", damage)
    done = subprocess.run(
        [sys.executable, str(ROOT / "eval_sink_open_source.py"), "--model", str(folder)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(folder) in lines[0], done.stderr


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
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md",
        "config.json",
        "generation_config.json",
        "model.safetensors",
    ]


def test_an_interrupted_export_leaves_the_previous_export_whole(tmp_path, monkeypatch):
    out = export_hf(GPT(Config.from_name("micro")), tmp_path / "hf")
    before = {path.name: path.read_bytes() for path in out.iterdir()}

    def disk_full(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)  # the rename that would put a finished file in place
    torch.manual_seed(1)
    with pytest.raises(DiskFullError, match=f"no space left on the disk of {out / 'model.safetensors'}"):
        export_hf(GPT(Config.from_name("micro")), out)
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before  # no partial or temporary file


def checkpoint(tmp_path, config):
    model = GPT(config).eval()
    ckpt = tmp_path / "iter-000001-ckpt.pth"
    torch.save({"model": model.state_dict(), "config": config.asdict(), "train": {}}, ckpt)
    return model, ckpt


@pytest.mark.slow
def test_the_export_script_refuses_an_output_path_that_is_a_file_in_one_line(tmp_path):
    _, ckpt = checkpoint(tmp_path, Config.from_name("micro"))
    (tmp_path / "taken").write_text("notes")
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "pretrain/export_hf.py"),
            "--load_from",
            str(ckpt),
            "--out_dir",
            str(tmp_path / "taken"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 1 and (tmp_path / "taken").read_text() == "notes"
    assert (
        done.stderr == f"error: {tmp_path / 'taken'} (or a parent of it) is a file, not a folder; choose another "
        f"output folder\n"
    )


@torch.no_grad()
def test_the_export_command_writes_a_folder_transformers_loads(tmp_path):
    from jsonargparse import CLI

    from lit_gpt.cli.export_hf import export
    from lit_gpt.data.tokenizer import train_bpe

    config = Config.from_name("micro", vocab_size=300)
    model, ckpt = checkpoint(tmp_path, config)
    train_bpe(["alpha beta gamma delta"] * 4, 300, tmp_path / "tokenizer.json")
    CLI(
        export,
        as_positional=False,
        args=[
            "--load_from",
            str(ckpt),
            "--out_dir",
            str(tmp_path / "hf"),
            "--tokenizer",
            str(tmp_path / "tokenizer.json"),
        ],
    )
    assert sorted(p.name for p in (tmp_path / "hf").iterdir()) == [
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    assert (tmp_path / "hf" / "tokenizer.json").read_bytes() == (tmp_path / "tokenizer.json").read_bytes()
    idx = probe(2, 16) % config.vocab_size
    torch.testing.assert_close(
        load_hf_causal_lm(tmp_path / "hf")(idx).logits[..., : config.vocab_size],
        model(idx)[..., : config.vocab_size],
        atol=1e-4,
        rtol=0,
    )


def test_export_never_replaces_another_models_files(tmp_path):
    from lit_gpt.core.files import OutputError
    from lit_gpt.data.tokenizer import train_bpe

    model = GPT(Config.from_name("micro"))
    data = tmp_path / "data"
    data.mkdir()
    theirs = train_bpe(["a b c d e f g"] * 20, 260, data / "tokenizer.json")
    before = (data / "tokenizer.json").read_bytes()
    other = train_bpe(["x y z"] * 20, 259, tmp_path / "other.json")
    with pytest.raises(OutputError, match=r"already holds tokenizer.json of another model"):
        export_hf(model, data, tokenizer=other.path)
    assert (data / "tokenizer.json").read_bytes() == before and sorted(p.name for p in data.iterdir()) == [
        "tokenizer.json"
    ]
    tiny_hf_llama(tmp_path / "hf_model")
    with pytest.raises(OutputError, match=r"holds config.json, generation_config.json, model.safetensors of another"):
        export_hf(model, tmp_path / "hf_model")
    export_hf(model, tmp_path / "ours", tokenizer=theirs.path)
    export_hf(model, tmp_path / "ours", tokenizer=theirs.path)  # an earlier export of ours is updated in place
