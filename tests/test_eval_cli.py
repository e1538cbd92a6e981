"""End-to-end checks of the evaluation entry points on a briefly trained `micro` checkpoint."""

import json
import random
import subprocess
import sys
from pathlib import Path

import matplotlib.image as mpimg
import pytest
import torch
import torch.nn.functional as F
from jsonargparse import CLI

from lit_gpt.cli.eval_sink import evaluate_checkpoint
from lit_gpt.cli.generate import sample
from lit_gpt.cli.report import parse as parse_report_args
from lit_gpt.cli.report import report
from lit_gpt.cli.streaming import compare_caches
from lit_gpt.data.tokenizer import train_bpe
from lit_gpt.data.transforms import InputTransforms
from lit_gpt.measurement.evaluation import (
    example_maps,
    probe_loss_mask,
)
from lit_gpt.model.config import Config
from lit_gpt.model.gpt import GPT
from lit_gpt.training.checkpoint import load_model

ROOT = Path(__file__).resolve().parents[1]
WORDS = "the a cat dog sat ran on under mat log big small red blue and then quickly slowly".split()


def synthetic_texts(n, seed):
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(60, 90))) + "." for _ in range(n)]


def train_checkpoint(path, tokenizer, texts, train_extra=None, steps=20, **overrides):
    """Train a micro model a few steps on `texts` and save it in the training-checkpoint format."""
    torch.manual_seed(0)
    config = Config.from_name("micro", vocab_size=tokenizer.vocab_size, **overrides)
    model = GPT(config)
    stream = torch.tensor([t for ids in tokenizer.encode_batch(texts) for t in ids + [tokenizer.eos_id]])
    windows = stream[: len(stream) // 65 * 65].view(-1, 65)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(steps):
        batch = windows[torch.randint(0, len(windows), (8,))]
        logits = model(batch[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    train = {
        "fixed_token_pos": None,
        "fixed_token_id": 1,
        "random_token_start": None,
        "random_token_end": None,
        "ignore_loss": 0,
        "train_data_dir": str(path.parent),
        "tokenizer": str(tokenizer.path),
    }
    train.update(train_extra or {})
    torch.save(
        {
            "model": model.state_dict(),
            "config": config.asdict(),
            "train": train,
            "iter_num": steps,
            "step_count": steps,
            "tokens_seen": steps * 8 * 64,
            "optimizer": optimizer.state_dict(),
        },
        path,
    )
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    tokenizer = train_bpe(synthetic_texts(50, seed=0), 300, root / "tokenizer.json")
    probe = root / "probe.jsonl"
    probe.write_text("".join(json.dumps({"text": t}) + "\n" for t in synthetic_texts(12, seed=1)))
    (root / "default").mkdir()
    ckpt = train_checkpoint(root / "default" / "iter-000020-ckpt.pth", tokenizer, synthetic_texts(60, seed=2))
    return {"root": root, "ckpt": ckpt, "probe": probe, "tokenizer": tokenizer}


@pytest.mark.slow
def test_eval_writes_every_field_and_pngs_that_open(run, tmp_path):
    out = tmp_path / "sink.json"
    completed = subprocess.run(
        [
            sys.executable,
            str(ROOT / "pretrain/eval_sink_pretrain.py"),
            "--load_from",
            str(run["ckpt"]),
            "--probe",
            str(run["probe"]),
            "--json",
            str(out),
            "--plots",
            str(tmp_path / "plots"),
            "--layers",
            "[0, 1]",
            "--heads",
            "[0, 2]",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    assert "Sink_1" in completed.stdout
    result = json.loads(out.read_text())
    assert result["n_sequences"] == 12
    assert [f"sink_{k}" for k in range(1, 11)] == list(result["sink_rates"])
    assert len(result["layer_sink_rates"]["sink_1"]) == 2
    assert 0 < result["loss"] < 10
    assert {"hidden", "keys", "values"} == set(result["norms"])
    assert len(result["norms"]["hidden"]) == 3 and len(result["norms"]["hidden"][0]) == 64
    assert {"top1", "top2", "top3", "median"} == set(result["massive_activations"])
    assert result["tokens_seen"] == 20 * 8 * 64 and result["variant"] == "softmax norm:sum"
    pngs = sorted((tmp_path / "plots").glob("*.png"))
    assert len(pngs) == 5
    for png in pngs:
        assert mpimg.imread(png).shape[0] > 100


def test_slot_variant_reports_sink_star(run, tmp_path):
    ckpt = train_checkpoint(
        tmp_path / "kv.pth", run["tokenizer"], synthetic_texts(20, seed=3), steps=3, k_bias=True, v_bias=True
    )
    out = tmp_path / "kv.json"
    CLI(
        evaluate_checkpoint,
        as_positional=False,
        args=["--load_from", str(ckpt), "--probe", str(run["probe"]), "--json", str(out)],
    )
    rates = json.loads(out.read_text())["sink_rates"]
    assert "sink_star" in rates and "sink_1" in rates


def test_eval_takes_a_run_folder_as_the_report_does_and_the_trainers_flag_names(run, tmp_path):
    from lit_gpt.cli.eval_sink import main

    folder = tmp_path / "run"
    folder.mkdir()
    older = folder / "iter-000010-ckpt.pth"
    older.write_bytes(run["ckpt"].read_bytes())
    newest = folder / "iter-000020-ckpt.pth"
    newest.write_bytes(run["ckpt"].read_bytes())
    out = tmp_path / "sink.json"
    main(
        [
            "--load_from",
            str(folder),
            "--probe_file",
            str(run["probe"]),
            "--sink_eps",
            "0.3",
            "--sink_k",
            "3",
            "--json",
            str(out),
        ]
    )
    result = json.loads(out.read_text())
    assert result["checkpoint"] == str(newest) and list(result["sink_rates"])[:3] == ["sink_1", "sink_2", "sink_3"]


def test_training_input_transforms_are_applied_to_the_probe(run, tmp_path):
    tokens = torch.arange(40).view(4, 10)
    train = {"fixed_token_pos": 2, "fixed_token_id": 99, "random_token_start": 5, "random_token_end": 7}
    transforms = InputTransforms.of_run(train)
    assert transforms == InputTransforms(fixed_token=(2, 99), random_token_range=(5, 7))
    assert InputTransforms.of_run({"fixed_token": [2, 99], "random_token_range": None}).fixed_token == (2, 99)
    out = transforms.apply(tokens, vocab_size=300)
    assert torch.all(out[:, 2] == 99)
    assert torch.equal(out[:, [0, 1, 3, 4, 7, 8, 9]], tokens[:, [0, 1, 3, 4, 7, 8, 9]])
    assert torch.equal(out, transforms.apply(tokens, vocab_size=300))  # reproducible
    prefix = Config.from_name("micro", prefix_tokens=3)
    assert probe_loss_mask(prefix, {}, 10).tolist() == [False] * 2 + [True] * 7
    assert probe_loss_mask(prefix, {"ignore_loss": 4}, 10).tolist() == [False] * 4 + [True] * 5
    assert probe_loss_mask(Config.from_name("micro"), {"ignore_loss": 0}, 10) is None

    ckpt = train_checkpoint(
        tmp_path / "fixed.pth",
        run["tokenizer"],
        synthetic_texts(20, seed=4),
        steps=3,
        train_extra={"fixed_token_pos": 3, "fixed_token_id": 7},
    )
    out_json = tmp_path / "fixed.json"
    CLI(
        evaluate_checkpoint,
        as_positional=False,
        args=["--load_from", str(ckpt), "--probe", str(run["probe"]), "--json", str(out_json)],
    )
    assert json.loads(out_json.read_text())["input_transforms"]["fixed_token"] == [3, 7]
    model, loaded = load_model(ckpt)
    maps = example_maps(model, loaded, torch.zeros(1, 8, dtype=torch.long))
    first = InputTransforms.of_run(loaded["train"]).apply(torch.zeros(1, 8, dtype=torch.long), 300)
    with torch.no_grad():
        assert torch.allclose(maps[0], model(first, return_attention=True)[1][0])


def test_generate_cli_continues_the_prompt_identically_with_and_without_cache(run):
    main = sample
    args = ["--load_from", str(run["ckpt"]), "--prompt", "the cat sat", "--max_new_tokens", "12"]
    cached = CLI(main, as_positional=False, args=args)
    recomputed = CLI(main, as_positional=False, args=args + ["--use_cache", "false"])
    assert cached == recomputed and cached[0].startswith("the cat sat") and len(cached[0]) > len("the cat sat")
    sampled = CLI(main, as_positional=False, args=args + ["--temperature", "1.0", "--top_k", "5", "--num_samples", "2"])
    assert len(sampled) == 2


@pytest.mark.parametrize(
    "extra, status, message",
    [
        (["--temperature", "nan"], 2, "error: --temperature: expected a finite float, got 'nan'"),
        (["--temperature", "inf"], 2, "error: --temperature: expected a finite float, got 'inf'"),
        (["--temperature", "-1"], 1, "error: temperature must be a finite number >= 0 (0 is greedy), got -1"),
        (["--top_k", "0"], 1, "error: top_k must be >= 1"),
        (["--seed", str(2**64)], 1, f"error: seed must be in 0..{2**64 - 1}"),
    ],
)
def test_generate_cli_refuses_degenerate_sampling_in_one_line(run, capsys, extra, status, message):
    """Non-finite floats are refused by the flag parser (exit 2); values it accepts but sampling cannot use
    are refused by the sampler's own check (exit 1)."""
    from lit_gpt.cli.generate import main

    with pytest.raises(SystemExit) as stop:
        main(["--load_from", str(run["ckpt"]), "--prompt", "the cat", "--max_new_tokens", "3", *extra])
    err = capsys.readouterr().err
    assert stop.value.code == status and err.startswith(message) and err.count("\n") == 1, err


def test_generate_cli_samples_greedily_at_a_vanishing_temperature_and_top_k_beyond_the_vocabulary(run):
    args = ["--load_from", str(run["ckpt"]), "--prompt", "the cat sat", "--max_new_tokens", "8"]
    greedy = CLI(sample, as_positional=False, args=args)
    cold = CLI(sample, as_positional=False, args=args + ["--temperature", "1e-300", "--top_k", "100000"])
    assert cold == greedy


def test_streaming_cli_reports_three_perplexities(run, tmp_path):
    out = tmp_path / "stream.json"
    results = CLI(
        compare_caches,
        as_positional=False,
        args=[
            "--load_from",
            f"[{run['ckpt']}]",
            "--text",
            str(run["probe"]),
            "--length",
            "100",
            "--window",
            "16",
            "--n_sink",
            "2",
            "--json",
            str(out),
        ],
    )
    assert json.loads(out.read_text()) == results
    single = CLI(
        compare_caches,
        as_positional=False,
        args=[
            "--load_from",
            str(run["ckpt"]),
            "--text",
            str(run["probe"]),
            "--length",
            "100",
            "--window",
            "16",
            "--n_sink",
            "2",
        ],
    )
    assert single == results
    perplexity = results[0]["perplexity"]
    assert set(perplexity) == {"full", "window", "sink"}
    assert all(1.0 < value < 1000.0 for value in perplexity.values())


def test_report_cli_tabulates_runs(run, tmp_path):
    second = tmp_path / "kv_bias"
    second.mkdir()
    train_checkpoint(
        second / "iter-000003-ckpt.pth",
        run["tokenizer"],
        synthetic_texts(20, seed=5),
        steps=3,
        k_bias=True,
        v_bias=True,
    )
    (second / "metrics.csv").write_text("step,metric,value\n3,metric/a_val_loss,4.0\n3,metric/b_val_loss,5.0\n")
    table = report(
        **parse_report_args(
            [str(run["ckpt"]), str(second), "--probe", str(run["probe"]), "--out", str(tmp_path / "report")]
        )
    )
    assert "| run | variant | Sink_1 (%) | Sink* (%) |" in table
    assert "| kv_bias | softmax norm:sum k_bias v_bias |" in table and "| 4.500 |" in table
    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == ["report.csv", "report.md", "report.png"]
    assert mpimg.imread(tmp_path / "report" / "report.png").shape[0] > 100
    assert (second / "iter-000003-ckpt.pth.sink.json").is_file()


def test_exported_checkpoint_gets_the_same_report_from_the_open_source_eval(run, tmp_path):
    from lit_gpt.data import load_probe_windows
    from lit_gpt.hf.io import export_hf
    from lit_gpt.hf.probe import evaluate_hf, load_hf_causal_lm
    from lit_gpt.measurement.evaluation import evaluate_run

    folder = export_hf(run["ckpt"], tmp_path / "hf", tokenizer=run["tokenizer"].path)
    assert (folder / "tokenizer.json").is_file()
    tokens = load_probe_windows(run["probe"], folder, length=32, count=6)
    model, ckpt = load_model(run["ckpt"])
    ours = evaluate_run(model, ckpt, tokens, eps=0.1)
    theirs = evaluate_hf(load_hf_causal_lm(folder), tokens, eps=0.1)
    assert theirs.sink_rates == ours.sink_rates
    assert theirs.loss == pytest.approx(ours.loss, abs=1e-5)


def test_generate_keeps_the_prompt_whole_on_a_run_with_a_fixed_first_token(run, tmp_path):
    """cpu-scale runs write BOS over position 0; the prompt must follow it, not lose its first token to it."""
    eos = run["tokenizer"].eos_id
    ckpt = train_checkpoint(
        tmp_path / "bos.pth",
        run["tokenizer"],
        synthetic_texts(20, seed=6),
        steps=3,
        train_extra={"fixed_token_pos": 0, "fixed_token_id": eos},
    )
    main = sample
    for use_cache in ("true", "false"):
        outputs = CLI(
            main,
            as_positional=False,
            args=[
                "--load_from",
                str(ckpt),
                "--prompt",
                "the cat sat",
                "--max_new_tokens",
                "5",
                "--use_cache",
                use_cache,
            ],
        )
        assert outputs[0].startswith("the cat sat"), outputs[0]


@pytest.mark.parametrize(
    "extra, match",
    [
        (["--batch_size", "0"], "--batch_size must be >= 1"),
        (["--positions", "-3"], "--positions must be >= 1"),
        (["--positions", "40"], "--positions 40 exceeds the 32-token probe windows"),
        (["--eps", "2"], r"--eps must be in \(0, 1\)"),
        (["--n_sequences", "0"], "--n_sequences must be >= 1"),
        (["--layers", "[5]"], r"--layers \[5\] must pick from 0..1"),
        (["--heads", "[]"], r"--heads \[\] must pick from 0..3"),
    ],
)
def test_evaluation_settings_without_a_meaning_are_refused_before_any_output(run, tmp_path, extra, match):
    from lit_gpt.measurement.evaluation import EvalError

    args = [
        "--load_from",
        str(run["ckpt"]),
        "--probe",
        str(run["probe"]),
        "--length",
        "32",
        "--json",
        str(tmp_path / "out.json"),
        "--plots",
        str(tmp_path / "plots"),
        *extra,
    ]
    with pytest.raises(EvalError, match=match):
        CLI(evaluate_checkpoint, as_positional=False, args=args)
    assert not (tmp_path / "out.json").exists() and not (tmp_path / "plots").exists()


@pytest.mark.parametrize(
    "extra, match",
    [
        (["--n_sink", "-1"], "--n_sink >= 0"),
        (["--length", "-5"], "--length >= 2"),
    ],
)
def test_streaming_settings_without_a_meaning_are_refused(run, extra, match):
    from lit_gpt.measurement.streaming import StreamingError

    with pytest.raises(StreamingError, match=match):
        CLI(
            compare_caches,
            as_positional=False,
            args=["--load_from", str(run["ckpt"]), "--text", str(run["probe"]), *extra],
        )
    with pytest.raises(StreamingError, match="names no checkpoint"):
        CLI(compare_caches, as_positional=False, args=["--load_from", "[]", "--text", str(run["probe"])])


def test_a_moved_run_tokenizer_names_where_it_came_from(run, tmp_path):
    ckpt = train_checkpoint(
        tmp_path / "moved.pth",
        run["tokenizer"],
        synthetic_texts(20, seed=7),
        steps=1,
        train_extra={"tokenizer": str(tmp_path / "gone" / "tokenizer.json")},
    )
    from lit_gpt.measurement.evaluation import EvalError

    with pytest.raises(EvalError, match=r"recorded in the checkpoint\) cannot be loaded .*pass --tokenizer PATH"):
        CLI(evaluate_checkpoint, as_positional=False, args=["--load_from", str(ckpt), "--probe", str(run["probe"])])
    assert (
        CLI(
            evaluate_checkpoint,
            as_positional=False,
            args=[
                "--load_from",
                str(ckpt),
                "--probe",
                str(run["probe"]),
                "--tokenizer",
                str(run["tokenizer"].path),
                "--length",
                "32",
            ],
        )
        is None
    )


def test_costs_flag_adds_the_sink_cost_columns_to_the_json_and_the_printout(run, tmp_path, capsys):
    out = tmp_path / "costs.json"
    CLI(
        evaluate_checkpoint,
        as_positional=False,
        args=["--load_from", str(run["ckpt"]), "--probe", str(run["probe"]), "--json", str(out), "--costs", "true"],
    )
    costs = json.loads(out.read_text())["costs"]
    block_size = load_model(run["ckpt"])[0].config.block_size
    assert costs["streaming"]["window"] == block_size // 2 and costs["streaming"]["n_tokens"] == 4 * block_size
    assert costs["w8a8"]["ratio"] == pytest.approx(costs["w8a8"]["perplexity_w8a8"] / costs["w8a8"]["perplexity_fp32"])
    assert 0 <= costs["kurtosis"]["layer"] < len(costs["layer_kurtosis"])
    printed = capsys.readouterr().out
    assert "W8A8 perplexity" in printed and "keep 4" in printed
