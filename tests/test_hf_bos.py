"""One BOS rule from training to Hugging Face: an exported run is probed and continued as its checkpoint is."""

import json

import pytest
import torch
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import processors

from lit_gpt.cli.eval_hf import evaluate_hf_model
from lit_gpt.cli.eval_sink import evaluate_checkpoint
from lit_gpt.cli.generate import sample
from lit_gpt.data.tokenizer import train_bpe
from lit_gpt.hf.io import HFError, export_hf
from lit_gpt.model.config import Config
from lit_gpt.model.gpt import GPT

transformers = pytest.importorskip("transformers")

WORDS = "alpha beta gamma delta epsilon zeta eta theta".split()
TEXTS = [" ".join(WORDS[(i * j) % 8] for j in range(80)) for i in range(1, 7)]
# The cpu-scale runs' convention: <|endoftext|> (id 0 of a BPE trained here) written over every window's first token.
BOS_RUN = {"fixed_token_pos": 0, "fixed_token_id": 0}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A BPE tokenizer that adds nothing when it encodes, one that puts <|endoftext|> first, a probe file."""
    root = tmp_path_factory.mktemp("bos")
    train_bpe(TEXTS, 300, root / "tokenizer.json")
    templated = HFTokenizer.from_file(str(root / "tokenizer.json"))
    templated.post_processor = processors.TemplateProcessing(
        single="<|endoftext|> $A", special_tokens=[("<|endoftext|>", 0)]
    )
    (root / "with_bos").mkdir()
    templated.save(str(root / "with_bos" / "tokenizer.json"))
    (root / "probe.jsonl").write_text("".join(json.dumps({"text": text}) + "\n" for text in TEXTS))
    return root


def bos_run(folder, files):
    """A checkpoint of a tiny LLaMA trained (here: initialised) with the fixed BOS, its weights large enough
    that attention has structure."""
    torch.manual_seed(0)
    model = GPT(Config.from_name("micro", vocab_size=300)).eval()
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 2:
                param.normal_(std=0.3)
    ckpt = folder / "iter-000001-ckpt.pth"
    torch.save(
        {
            "model": model.state_dict(),
            "config": model.config.asdict(),
            "train": {**BOS_RUN, "tokenizer": str(files / "tokenizer.json")},
        },
        ckpt,
    )
    return ckpt


@torch.no_grad()
def test_an_exported_bos_run_gives_its_checkpoints_numbers_and_generations(files, tmp_path):
    ckpt = bos_run(tmp_path, files)
    out = export_hf(ckpt, tmp_path / "hf", tokenizer=files / "tokenizer.json")
    config = json.loads((out / "config.json").read_text())
    assert (config["bos_token_id"], config["eos_token_id"]) == (0, 0)
    assert json.loads((out / "generation_config.json").read_text()) == {"bos_token_id": 0, "eos_token_id": 0}
    assert json.loads((out / "tokenizer_config.json").read_text())["add_bos_token"] is True

    # eps 0.1: this random model's heads spread across that threshold, so the rates are not trivially 0
    settings = dict(probe=files / "probe.jsonl", length=24, eps=0.1)
    evaluate_checkpoint(ckpt, json=tmp_path / "ours.json", **settings)
    evaluate_hf_model(str(out), json=tmp_path / "hf.json", **settings)  # --add_bos auto, the default
    ours, theirs = (json.loads((tmp_path / name).read_text()) for name in ("ours.json", "hf.json"))
    assert theirs["bos"] is True and 0 < ours["sink_rates"]["sink_1"] < 100
    assert theirs["sink_rates"] == pytest.approx(ours["sink_rates"], abs=1e-5)
    for name, rates in ours["layer_sink_rates"].items():
        assert theirs["layer_sink_rates"][name] == pytest.approx(rates, abs=1e-5)
    for name, alphas in ours["layer_mean_alpha"].items():
        assert theirs["layer_mean_alpha"][name] == pytest.approx(alphas, abs=1e-5)
    assert theirs["loss"] == pytest.approx(ours["loss"], abs=1e-5)

    prompt = "alpha gamma epsilon"
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(out)
    ids = hf_tokenizer(prompt, return_tensors="pt").input_ids
    continued = hf_model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False)
    assert ids[0, 0] == 0 and continued[0, 0] == 0  # the tokenizer puts the BOS before the prompt
    assert sample(ckpt, prompt, max_new_tokens=12) == [hf_tokenizer.decode(continued[0, 1:])]


def test_a_run_without_a_bos_exports_a_tokenizer_that_adds_none(files, tmp_path):
    """The tokenizer given may add a BOS (a LLaMA's does); the model was trained without one."""
    out = export_hf(GPT(Config.from_name("micro", vocab_size=300)), tmp_path / "hf", tokenizer=files / "with_bos")
    assert json.loads((out / "config.json").read_text())["bos_token_id"] is None
    settings = json.loads((out / "tokenizer_config.json").read_text())
    assert settings["add_bos_token"] is False and "bos_token" not in settings
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    assert hf_tokenizer("alpha beta").input_ids == hf_tokenizer("alpha beta", add_special_tokens=False).input_ids
    evaluate_hf_model(model=str(out), probe=files / "probe.jsonl", length=16, json=tmp_path / "hf.json")
    assert json.loads((tmp_path / "hf.json").read_text())["bos"] is False


def test_a_bos_outside_the_tokenizers_vocabulary_is_refused_before_writing(files, tmp_path):
    with pytest.raises(HFError, match="BOS id 999 is not in the vocabulary of .*; export with the tokenizer"):
        export_hf(GPT(Config.from_name("micro")), tmp_path / "hf", tokenizer=files / "tokenizer.json", bos_id=999)
    assert not (tmp_path / "hf").exists()
