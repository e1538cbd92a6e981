"""End-to-end training through the CLI and the library, on the `micro` preset and a tiny synthetic corpus.

The corpus is a word-level language with a learnable structure (each word mostly determines the next),
tokenized with a word-level `tokenizer.json` and stored as LITPKDS shards, so loss must fall quickly.
"""

import json
import os
import signal
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tokenizers
import torch
from tokenizers import models, pre_tokenizers

from lit_gpt.data import DataError
from lit_gpt.model.config import Config, ConfigError
from lit_gpt.model.gpt import GPT
from lit_gpt.training.checkpoint import find_latest, list_checkpoints, load_model
from lit_gpt.training.loggers import read_metrics
from lit_gpt.training.run_config import parse_args
from lit_gpt.training.train_args import ArgsError
from lit_gpt.training.trainer import setup

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "pretrain" / "tinyllama.py"
N_WORDS = 100
VOCAB = N_WORDS + 1  # word ids 1..N_WORDS, EOS = 0


def metric_series(path: Path, name: str) -> dict[int, float]:
    """step -> value of one metric of a metrics.csv."""
    return {step: value for step, metric, value in read_metrics(path) if metric == name}


def _sentences(rng: np.random.Generator, n_docs: int) -> list[str]:
    docs = []
    for _ in range(n_docs):
        word, words = int(rng.integers(N_WORDS)), []
        for _ in range(int(rng.integers(80, 160))):
            words.append(f"w{word}")
            word = (7 * word + 3) % N_WORDS if rng.random() < 0.85 else int(rng.integers(N_WORDS))
        docs.append(" ".join(words))
    return docs


def _write_litpkds(path: Path, tokens: list[int]) -> None:
    with open(path, "wb") as handle:
        handle.write(struct.pack("<7sQBQ", b"LITPKDS", 1, 8, len(tokens)))
        handle.write(np.asarray(tokens, dtype=np.uint16).tobytes())


def build_corpus(folder: Path, domains: tuple[str, ...] = ("alpha", "beta")) -> Path:
    """Shards `train_<domain>.bin`/`valid_<domain>.bin`, `tokenizer.json`, `meta.json` and a probe file."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab = {"<|endoftext|>": 0, **{f"w{i}": i + 1 for i in range(N_WORDS)}}
    tokenizer = tokenizers.Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "meta.json").write_text(json.dumps({"tokenizer": {"vocab_size": VOCAB}}))
    rng = np.random.default_rng(0)
    for split, n_docs in (("train", 160), ("valid", 24)):
        for domain in domains:
            ids = []
            for doc in _sentences(rng, n_docs):
                ids += [vocab[word] for word in doc.split()] + [0]
            _write_litpkds(folder / f"{split}_{domain}.bin", ids)
    probe = folder / "probe_valid.jsonl"
    probe.write_text("".join(json.dumps({"text": text}) + "\n" for text in _sentences(rng, 8)))
    return folder


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return build_corpus(tmp_path_factory.mktemp("corpus"))


def cli_args(corpus: Path, out_root: Path, *extra: str) -> list[str]:
    return [
        "--model_name",
        "micro",
        "--train_data_dir",
        str(corpus),
        "--probe_file",
        str(corpus / "probe_valid.jsonl"),
        "--checkpoint_root",
        str(out_root),
        "--out_name",
        "run",
        "--global_batch_size",
        "8",
        "--micro_batch_size",
        "4",
        "--max_step",
        "30",
        "--learning_rate",
        "1e-2",
        "--min_lr",
        "1e-3",
        "--warmup_steps",
        "3",
        "--weight_decay",
        "0.1",
        "--eval_step_interval",
        "10",
        "--eval_iters",
        "2",
        "--save_step_interval",
        "10",
        "--log_step_interval",
        "1",
        "--logger",
        "none",
        "--progress_bar",
        "false",
        "--peak_flops",
        "1e11",
        "--seed",
        "7",
        *extra,
    ]


def run_cli(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=300, **kwargs
    )


@pytest.mark.slow
def test_training_decreases_valid_loss_and_writes_checkpoints_and_csv(corpus, tmp_path):
    setup(parse_args(cli_args(corpus, tmp_path, "--keep_last", "2", "--logger", "tensorboard")))
    out = tmp_path / "run"
    assert [p.name for p in list_checkpoints(out)] == ["iter-000020-ckpt.pth", "iter-000030-ckpt.pth"]
    rows = read_metrics(out / "metrics.csv")
    names = {name for _, name, _ in rows}
    assert {
        "metric/train_loss",
        "metric/alpha_val_loss",
        "metric/beta_val_ppl",
        "metric/sink_1",
        "lr",
        "gradient_norm",
        "total_tokens",
        "throughput/tokens_per_sec",
        "throughput/mfu",
    } <= names
    for domain in ("alpha", "beta"):
        valid = metric_series(out / "metrics.csv", f"metric/{domain}_val_loss")
        assert sorted(valid) == [0, 10, 20, 30]
        assert valid[30] < valid[0] - 1.0
    assert 0 <= metric_series(out / "metrics.csv", "metric/sink_1")[30] <= 100
    assert metric_series(out / "metrics.csv", "total_tokens")[30] == 30 * 8 * 64

    model, checkpoint = load_model(find_latest(out))
    assert checkpoint["step_count"] == 30 and checkpoint["iter_num"] == 60
    assert checkpoint["train"]["ignore_loss"] == 0 and checkpoint["train"]["train_data_dir"] == str(corpus)
    assert {"optimizer", "train_loader", "rng", "tokens_seen"} <= set(checkpoint)
    assert model.config.name == "micro" and not model.training
    assert list((out / "logs" / "tensorboard").rglob("events.out.tfevents.*"))


pytestmark = pytest.mark.usefixtures("one_thread")


def _state_dicts_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_resume_after_sigkill_matches_an_uninterrupted_run(corpus, tmp_path):
    common = ("--max_step", "12", "--save_step_interval", "6", "--eval_step_interval", "6")
    setup(parse_args(cli_args(corpus, tmp_path / "straight", *common)))

    interrupted_root = tmp_path / "interrupted"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, str(SCRIPT), *cli_args(corpus, interrupted_root, *common)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        for line in process.stdout:
            if line.startswith("Saved checkpoint") and "iter-000006" in line:
                process.send_signal(signal.SIGKILL)
                break
    finally:
        process.kill()
        process.wait()
    assert process.returncode == -signal.SIGKILL
    out = interrupted_root / "run"
    # Should the run have outpaced the kill, drop what it wrote later: the state on disk is then
    # exactly that of a process killed right after step 6.
    for path in list_checkpoints(out)[1:]:
        path.unlink()
    assert [p.name for p in list_checkpoints(out)] == ["iter-000006-ckpt.pth"]

    resumed = run_cli(cli_args(corpus, interrupted_root, *common, "--resume", "True"))
    assert resumed.returncode == 0, resumed.stderr
    assert "Resuming from" in resumed.stdout

    for metric in ("metric/train_loss", "metric/alpha_val_loss", "gradient_norm", "lr", "metric/probe_loss"):
        expected = metric_series(tmp_path / "straight" / "run" / "metrics.csv", metric)
        assert metric_series(out / "metrics.csv", metric) == expected, metric
    assert sorted(metric_series(out / "metrics.csv", "metric/train_loss")) == list(range(1, 13))
    final_straight = torch.load(find_latest(tmp_path / "straight" / "run"), weights_only=False)
    final_resumed = torch.load(find_latest(out), weights_only=False)
    assert _state_dicts_equal(final_straight["model"], final_resumed["model"])
    assert final_straight["train_loader"] == final_resumed["train_loader"]
    assert final_resumed["step_count"] == 12 and final_resumed["iter_num"] == 24


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_matches_one_process_with_the_same_global_batch(corpus, tmp_path):
    common = ("--max_step", "6", "--eval_sink", "false", "--save_step_interval", "6", "--eval_step_interval", "6")
    setup(parse_args(cli_args(corpus, tmp_path / "single", *common)))
    ddp = run_cli(cli_args(corpus, tmp_path / "ddp", *common, "--devices", "2", "--strategy", "ddp"))
    assert ddp.returncode == 0, ddp.stderr
    assert "2 process(es), gradient accumulation 1" in ddp.stdout

    one = metric_series(tmp_path / "single" / "run" / "metrics.csv", "metric/train_loss")
    two = metric_series(tmp_path / "ddp" / "run" / "metrics.csv", "metric/train_loss")
    assert sorted(one) == sorted(two) == list(range(1, 7))
    for step in one:
        assert two[step] == pytest.approx(one[step], rel=1e-5)
    weights_one = torch.load(find_latest(tmp_path / "single" / "run"), weights_only=False)["model"]
    weights_two = torch.load(find_latest(tmp_path / "ddp" / "run"), weights_only=False)["model"]
    for name, tensor in weights_one.items():
        torch.testing.assert_close(weights_two[name], tensor, rtol=1e-4, atol=1e-5)


def test_sigterm_saves_a_checkpoint_and_stops_cleanly(corpus, tmp_path, monkeypatch, capsys):
    import lit_gpt.training.trainer as trainer

    real_step = trainer.train_step

    def step_then_get_preempted(fabric, state, *args):
        result = real_step(fabric, state, *args)
        if state["step_count"] == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return result

    monkeypatch.setattr(trainer, "train_step", step_then_get_preempted)
    handler = signal.getsignal(signal.SIGTERM)
    setup(
        parse_args(
            cli_args(
                corpus,
                tmp_path,
                "--max_step",
                "1000",
                "--save_step_interval",
                "1000",
                "--eval_step_interval",
                "1000",
                "--eval_sink",
                "false",
                "--eval_iters",
                "1",
            )
        )
    )
    assert "Stop requested by signal; saving step 3 and exiting" in capsys.readouterr().out
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["iter-000003-ckpt.pth"]
    assert signal.getsignal(signal.SIGTERM) is handler


def test_non_finite_loss_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(corpus, tmp_path, monkeypatch):
    import lit_gpt.training.trainer as trainer

    calls = {"n": 0}
    real_loss = trainer.lm_loss

    def loss_turning_nan(logits, targets):
        calls["n"] += 1
        loss = real_loss(logits, targets)
        return loss * float("nan") if calls["n"] > 10 else loss

    monkeypatch.setattr(trainer, "lm_loss", loss_turning_nan)
    args = cli_args(
        corpus,
        tmp_path,
        "--max_step",
        "8",
        "--save_step_interval",
        "2",
        "--eval_step_interval",
        "100",
        "--eval_sink",
        "false",
        "--eval_iters",
        "1",
    )
    with pytest.raises(
        trainer.TrainingError, match=r"non-finite training loss \(nan\).*Last good checkpoint: .*iter-000004"
    ):
        setup(parse_args(args))
    model, checkpoint = load_model(find_latest(tmp_path / "run"))
    assert checkpoint["step_count"] == 4
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_upstream_yaml_keys_are_accepted_and_cli_overrides_them(tmp_path):
    run_yaml = tmp_path / "run.yaml"
    run_yaml.write_text(
        "train:\n  train_the_pile_arxiv: 0.1052\n  train_the_pile_github: 0.0427\n"
        "valid:\n  valid_the_pile_arxiv: 1.0\n"
        "seed: 42\ntemperature: 0.5\nmin_strength: 0.1\nmax_strength: 5.0\nminimum: 0.0002\n"
        "sample_multiplier: 100\nmaximum_usage: 15\n"
        "model_name: tinyllama_60M\ntotal_devices: 4\nnum_of_devices: 4\nglobal_batch_size: 512\n"
        "micro_batch_size: 16\nmax_step: 20000\nsave_step_interval: 1000\neval_step_interval: 1000\n"
        "learning_rate: 0.0004\nmin_lr: 0.0004\nwarmup_steps: 100\nwindow_size: 128\n"
    )
    args = parse_args(
        ["--data_yaml_file", str(run_yaml), "--learning_rate", "1e-3", "--model.window_size", "64"], exit_on_error=False
    )
    assert args.train == {"train_the_pile_arxiv": 0.1052, "train_the_pile_github": 0.0427}
    assert args.valid == {"valid_the_pile_arxiv": 1.0}
    assert (args.devices, args.seed, args.micro_batch_size, args.min_lr) == (4, 42, 16, 4e-4)
    assert args.learning_rate == 1e-3 and args.model == {"window_size": 64}
    assert args.model_config().window_size == 64 and args.model_config().n_layer == 10


def test_example_run_yaml_parses():
    args = parse_args(["--config", str(ROOT / "configs" / "tinyllama_60m.yaml")], exit_on_error=False)
    assert args.model_name == "tinyllama_60M" and len(args.train) == 17 and args.max_step == 20000


def test_unknown_yaml_key_is_an_error_listing_the_valid_keys(tmp_path):
    run_yaml = tmp_path / "run.yaml"
    run_yaml.write_text("model_name: micro\nlearning_rat: 0.1\n")
    with pytest.raises(ArgsError, match=r"unknown key\(s\) learning_rat; valid keys: .*learning_rate"):
        parse_args(["--config", str(run_yaml)], exit_on_error=False)
    run_yaml.write_text("model: {attn_scor: sigmoid}\n")
    with pytest.raises(ArgsError, match=r"unknown model field\(s\) attn_scor; valid: .*attn_score"):
        parse_args(["--config", str(run_yaml)], exit_on_error=False)


def test_bad_overrides_are_clear_errors():
    with pytest.raises(ConfigError, match="attn_score='cosine' is not one of softmax"):
        parse_args(["--model_name", "micro", "--model.attn_score", "cosine"], exit_on_error=False)
    with pytest.raises(ConfigError, match="unknown model preset 'nano'"):
        parse_args(["--model_name", "nano"], exit_on_error=False)
    with pytest.raises(Exception, match="max_step"):
        parse_args(["--max_step", "many"], exit_on_error=False)
    with pytest.raises(Exception, match="no_such_flag"):
        parse_args(["--no_such_flag", "1"], exit_on_error=False)
    with pytest.raises(ArgsError, match="strategy='deepspeed'"):
        parse_args(["--model_name", "micro", "--strategy", "deepspeed"], exit_on_error=False)
    with pytest.raises(ArgsError, match="random_token_start and random_token_end"):
        parse_args(["--model_name", "micro", "--random_token_start", "3"], exit_on_error=False)


def test_missing_data_dir_and_probe_file_are_clear_errors(corpus, tmp_path):
    with pytest.raises(
        DataError, match="train_data_dir .*nowhere does not exist; run `bash preprocess/run_preprocess.sh"
    ):
        setup(parse_args(cli_args(corpus, tmp_path, "--train_data_dir", str(tmp_path / "nowhere"))))
    with pytest.raises(DataError, match="probe file .*missing.jsonl does not exist"):
        setup(parse_args(cli_args(corpus, tmp_path, "--probe_file", str(tmp_path / "missing.jsonl"))))


def test_batch_sizes_that_do_not_divide_are_an_error(corpus, tmp_path):
    with pytest.raises(ArgsError, match="global_batch_size=10 is not a multiple of micro_batch_size"):
        setup(parse_args(cli_args(corpus, tmp_path, "--global_batch_size", "10")))


def test_cli_reports_errors_in_one_line_and_exit_code(tmp_path, monkeypatch, capsys):
    import runpy

    monkeypatch.setattr(
        sys, "argv", [str(SCRIPT), "--model_name", "micro", "--train_data_dir", str(tmp_path / "absent")]
    )
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(SCRIPT), run_name="__main__")
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.startswith(f"error: train_data_dir {tmp_path / 'absent'} does not exist")
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), "--model_name", "micro", "--max_step", "0"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(SCRIPT), run_name="__main__")
    assert exit_info.value.code == 2
    assert "error: max_step must be positive, got 0" in capsys.readouterr().err


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"k_bias": True, "v_bias": True, "head_bias": True, "sink_tokens": 2, "attn_gate": "headwise"},
        {"pos_embedding": "relative", "attn_score": "linear", "attn_kernel": "mlp", "attn_normalize": "none"},
    ],
)
def test_meta_device_materialisation_applies_the_paper_init(overrides):
    """The materialisation contract of sharding libraries: each module holding parameters of its own is
    moved off the meta device and its `reset_parameters` is called. (`--strategy fsdp` builds the model
    in full instead, see tests/test_fsdp.py.)"""
    config = Config.from_name("tiny", **overrides)
    torch.manual_seed(0)
    with torch.device("meta"):
        model = GPT(config)
    assert all(p.is_meta for p in model.parameters())
    for module in model.modules():
        if any(True for _ in module.parameters(recurse=False)):
            module.to_empty(device="cpu", recurse=False)
            module.reset_parameters()
    params = dict(model.named_parameters())
    assert all(torch.isfinite(p).all() for p in params.values())
    init_std, out_std = model.init_std, 1 / config.intermediate_size**0.5 / config.n_layer
    for name, param in params.items():
        if name.endswith("mlp.down_proj.weight"):
            assert param.std().item() == pytest.approx(out_std, rel=0.1), name
        elif name.endswith(".weight") and param.ndim == 2 and "norm" not in name:
            assert param.std().item() == pytest.approx(init_std, rel=0.1), name
        elif "norm" in name:
            assert torch.equal(param, torch.ones_like(param)), name
    if config.k_bias:
        assert params["blocks.0.attn.slots.k_star"].std().item() == pytest.approx(0.02, rel=0.3)
    if config.sink_tokens:
        assert params["sink_tokens"].std().item() == pytest.approx(init_std, rel=0.3)


def test_resume_skips_a_damaged_newest_checkpoint_and_says_so(corpus, tmp_path, capsys):
    common = ("--save_step_interval", "2", "--eval_step_interval", "100", "--eval_sink", "false", "--eval_iters", "1")
    setup(parse_args(cli_args(corpus, tmp_path, "--max_step", "4", *common)))
    out = tmp_path / "run"
    newest = find_latest(out)
    newest.write_bytes(newest.read_bytes()[:4096])
    capsys.readouterr()
    setup(parse_args(cli_args(corpus, tmp_path, "--max_step", "6", "--resume", "auto", *common)))
    printed = capsys.readouterr().out
    assert f"warning: checkpoint {newest} cannot be read" in printed
    assert "Resuming from " + str(out / "iter-000002-ckpt.pth") in printed
    assert load_model(find_latest(out))[1]["step_count"] == 6


def test_resume_refuses_when_no_checkpoint_is_readable_instead_of_starting_over(corpus, tmp_path):
    from lit_gpt.training.checkpoint import CheckpointError

    out = tmp_path / "run"
    out.mkdir()
    (out / "iter-000002-ckpt.pth").write_bytes(b"")
    for resume in ("auto", "True"):
        with pytest.raises(CheckpointError, match="no readable checkpoint"):
            setup(parse_args(cli_args(corpus, tmp_path, "--resume", resume, "--eval_sink", "false")))
    with pytest.raises(CheckpointError, match="cannot be read"):
        setup(parse_args(cli_args(corpus, tmp_path, "--resume", str(out / "iter-000002-ckpt.pth"))))
    assert [p.name for p in out.iterdir()] == ["iter-000002-ckpt.pth"]


@pytest.mark.parametrize("vocab_size", [50, VOCAB - 1, 64])
def test_a_model_vocabulary_smaller_than_the_shards_is_refused_before_any_step(corpus, tmp_path, vocab_size):
    """50 and 64 give a 64-row table the ids overflow; VOCAB - 1 = 100 still pads to the 128 rows the data
    needs, so without the check it would train silently on a row generation never samples."""
    with pytest.raises(
        DataError,
        match=rf"built with a {VOCAB}-entry tokenizer, more than the model's "
        rf"vocab_size={vocab_size}; set --model.vocab_size {VOCAB}",
    ):
        setup(parse_args(cli_args(corpus, tmp_path, "--model.vocab_size", str(vocab_size))))
    assert not (tmp_path / "run").exists()


def test_a_probe_tokenizer_beyond_the_model_vocabulary_is_refused(corpus, tmp_path):
    folder = build_corpus(tmp_path / "no_meta")
    (folder / "meta.json").unlink()  # upstream LITPKDS data carries no meta.json: its shards' own ids are checked
    for shard in folder.glob("*.bin"):  # shards the model covers, so the probe's tokenizer is the culprit
        _write_litpkds(shard, list(range(64)) * 8)
    with pytest.raises(DataError, match=r"probe .* yields token id \d+, beyond the model's vocab_size=64"):
        setup(parse_args(cli_args(folder, tmp_path, "--model.vocab_size", "64")))


def test_a_fresh_start_never_overwrites_an_earlier_runs_checkpoints(corpus, tmp_path):
    common = ("--max_step", "2", "--save_step_interval", "2", "--eval_sink", "false", "--eval_iters", "1")
    setup(parse_args(cli_args(corpus, tmp_path, *common)))
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()}
    with pytest.raises(ArgsError, match=r"already holds checkpoints up to iter-000002-ckpt.pth; pass --resume auto"):
        setup(parse_args(cli_args(corpus, tmp_path, *common, "--seed", "8")))
    assert {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()} == before


def test_a_file_where_the_run_folder_goes_is_refused(corpus, tmp_path):
    from lit_gpt.core.files import OutputError

    (tmp_path / "run").write_text("notes")
    with pytest.raises(OutputError, match="is a file, not a run folder"):
        setup(parse_args(cli_args(corpus, tmp_path)))
    assert (tmp_path / "run").read_text() == "notes"


def test_a_run_resumes_with_another_attention_backend(corpus, tmp_path, capsys):
    """The backend is how the model runs, not what it computes: it is not saved and may change on resume."""
    common = ("--save_step_interval", "2", "--eval_sink", "false", "--eval_iters", "1")
    setup(parse_args(cli_args(corpus, tmp_path, "--max_step", "2", "--attn_backend", "eager", *common)))
    setup(
        parse_args(cli_args(corpus, tmp_path, "--max_step", "4", "--attn_backend", "sdpa", "--resume", "auto", *common))
    )
    assert "Resuming from" in capsys.readouterr().out
    checkpoint = load_model(find_latest(tmp_path / "run"))[1]
    assert checkpoint["step_count"] == 4 and "attn_backend" not in checkpoint["config"]
    assert checkpoint["train"]["attn_backend"] == "sdpa"


def test_resume_refuses_another_models_checkpoint_or_a_foreign_file_before_loading(corpus, tmp_path):
    from lit_gpt.training.checkpoint import CheckpointError

    common = ("--max_step", "2", "--save_step_interval", "2", "--eval_sink", "false", "--eval_iters", "1")
    setup(parse_args(cli_args(corpus, tmp_path, *common)))
    saved = find_latest(tmp_path / "run")
    with pytest.raises(CheckpointError, match=r"another model config: n_layer=2 \(now 3\)"):
        setup(
            parse_args(
                cli_args(corpus, tmp_path, *common, "--max_step", "4", "--model.n_layer", "3", "--resume", "auto")
            )
        )
    weights_only = tmp_path / "weights.pth"
    checkpoint = torch.load(saved, weights_only=False)
    torch.save({"model": checkpoint["model"], "config": checkpoint["config"]}, weights_only)
    with pytest.raises(CheckpointError, match=r"lacks optimizer, train_loader, rng, .*not saved by this trainer"):
        setup(parse_args(cli_args(corpus, tmp_path / "other", *common, "--resume", str(weights_only))))


@pytest.mark.parametrize(
    "flag, value, match",
    [
        ("--learning_rate", "-1", "learning_rate must be positive"),
        ("--beta1", "2", r"beta1 must be in \[0, 1\)"),
        ("--min_lr", "1", "min_lr=1.0 is above learning_rate"),
        ("--fixed_token_pos", "1000", "fixed_token_pos=1000 is outside a 65-token window"),
        ("--fixed_token_id", "9999", "fixed_token_id=9999 is not a token id"),
        ("--random_token_end", "1000", "random token span ends at 1000"),
        ("--devices", "0", "devices must be 'auto' or a positive number"),
        ("--precision", "foo", "precision='foo' is not one of"),
        ("--num_nodes", "0", "num_nodes must be positive"),
        ("--seed", "-1", "seed must be >= 0"),
        ("--cooldown_steps", "-5", "cooldown_steps must be >= 0"),
        ("--sink_eps", "2", r"sink_eps must be in \(0, 1\)"),
        ("--eval_iters", "0", "eval_iters must be positive"),
        ("--peak_flops", "-1", "peak_flops must be positive"),
    ],
)
def test_settings_no_run_can_use_are_refused_before_any_process_starts(corpus, tmp_path, flag, value, match):
    extra = [flag, value]
    if flag == "--fixed_token_id":
        extra += ["--fixed_token_pos", "0"]
    if flag == "--random_token_end":
        extra += ["--random_token_start", "0"]
    with pytest.raises(ArgsError, match=match):
        setup(parse_args(cli_args(corpus, tmp_path, *extra), exit_on_error=False))
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------------ faults
@pytest.mark.slow
def test_a_second_run_into_the_same_folder_is_refused_and_the_first_is_untouched(corpus, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    long = ("--eval_sink", "false", "--max_step", "100000", "--eval_step_interval", "100000")
    first = subprocess.Popen(
        [sys.executable, str(SCRIPT), *cli_args(corpus, tmp_path, *long)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        for line in first.stdout:
            if "parameters" in line:  # the model is built: the first run owns the folder
                break
        second = run_cli(cli_args(corpus, tmp_path, *long))
        first.send_signal(signal.SIGTERM)  # the first one saves its step and ends
        rest, errors = first.communicate(timeout=120)
    finally:
        first.kill()
        first.wait()
    assert first.returncode == 0, errors
    assert second.returncode == 1 and second.stderr.count("\n") == 1, second.stderr
    assert second.stderr.startswith(f"error: run folder {tmp_path / 'run'} is in use by process {first.pid} on ")
    assert "choose another --out_name (nothing was changed)" in second.stderr and "Saved" not in second.stdout
    out = tmp_path / "run"
    latest = find_latest(out)
    steps = load_model(latest)[1]["step_count"]
    assert latest.name in rest and steps >= 1 and not (out / ".lock").exists()
    assert sorted(metric_series(out / "metrics.csv", "metric/train_loss")) == list(range(1, steps + 1))


def test_a_fresh_run_sets_an_earlier_runs_metrics_aside_instead_of_appending(corpus, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    earlier = "step,metric,value\n1,metric/train_loss,9.0\n2,metric/train_loss,8.0\n"
    (out / "metrics.csv").write_text(earlier)
    (out / "iter-000003-ckpt.pth.tmp").write_bytes(b"PK a save killed midway")
    setup(parse_args(cli_args(corpus, tmp_path, "--max_step", "3", "--eval_sink", "false", "--resume", "auto")))
    kept = list(out.glob("metrics.earlier-*.csv"))
    assert len(kept) == 1 and kept[0].read_text() == earlier
    assert sorted(metric_series(out / "metrics.csv", "metric/train_loss")) == [1, 2, 3]
    assert (
        f"{out / 'metrics.csv'} is an earlier run's (no checkpoint to continue); kept as {kept[0]}"
        in capsys.readouterr().out
    )
    assert sorted(p.name for p in out.iterdir()) == sorted(["iter-000003-ckpt.pth", "metrics.csv", kept[0].name])


def test_a_full_disk_at_a_save_stops_the_run_in_one_line_with_the_last_checkpoint_intact(corpus, tmp_path, small_disk):
    probe_root = tmp_path / "probe"
    setup(parse_args(cli_args(corpus, probe_root, "--max_step", "1", "--eval_sink", "false")))
    size = find_latest(probe_root / "run").stat().st_size
    disk = small_disk(str(int(size * 1.6)))
    from lit_gpt.training.checkpoint import CheckpointWriteError

    with pytest.raises(
        CheckpointWriteError,
        match=rf"no space left to save checkpoint {disk}/run/iter-000002-ckpt.pth: "
        r"it needs about [\d.]+ kB and [\d.]+ kB are free on that disk",
    ):
        setup(
            parse_args(cli_args(corpus, disk, "--max_step", "3", "--save_step_interval", "1", "--eval_sink", "false"))
        )
    assert [p.name for p in list_checkpoints(disk / "run")] == ["iter-000001-ckpt.pth"]
    assert not list((disk / "run").glob("*.tmp")) and load_model(find_latest(disk / "run"))[1]["step_count"] == 1


def test_a_short_run_logs_its_last_step_ends_with_a_summary_and_is_left_alone_once_finished(corpus, tmp_path, capsys):
    argv = cli_args(
        corpus, tmp_path, "--max_step", "3", "--log_step_interval", "10", "--eval_sink", "false", "--resume", "auto"
    )
    setup(parse_args(argv))
    out = tmp_path / "run"
    printed = capsys.readouterr().out
    for metric in ("metric/train_loss", "lr", "throughput/tokens_per_sec", "throughput/mfu"):
        assert list(metric_series(out / "metrics.csv", metric)) == [3], metric
    assert "Run summary: steps 0 -> 3 of 3 in " in printed and " tokens/s, MFU " in printed
    assert "peak memory " in printed and f"checkpoints: {out} (newest iter-000003-ckpt.pth)" in printed
    assert f"metrics: {out / 'metrics.csv'}" in printed and "dashboard: none" in printed
    before = {path.name: path.stat().st_mtime_ns for path in out.iterdir()}
    setup(parse_args(argv))
    assert capsys.readouterr().out == (
        f"{out} has finished already: its checkpoint iter-000003-ckpt.pth has reached "
        f"--max_step 3, so there is nothing to do (raise --max_step to train on, or "
        f"choose another --out_name)\n"
    )
    assert {path.name: path.stat().st_mtime_ns for path in out.iterdir()} == before
