"""Every command line turns bad input into one `error:` line and a non-zero exit, never a traceback."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
import torch
from test_trainer import build_corpus, cli_args

from lit_gpt.core.errors import UserError, run_cli
from lit_gpt.model.config import Config
from lit_gpt.model.gpt import GPT
from lit_gpt.training.run_config import parse_args

ROOT = Path(__file__).resolve().parents[1]
ENTRY_POINTS = sorted(
    [
        *ROOT.glob("pretrain/*.py"),
        ROOT / "eval_sink_open_source.py",
        ROOT / "preprocess/prepare.py",
        ROOT / "scripts/sweep.py",
    ]
)


def command_module(script: Path) -> Path:
    """The `lit_gpt/cli` module a thin script runs."""
    module = next(line.split()[1] for line in script.read_text().splitlines() if line.startswith("from lit_gpt.cli."))
    return ROOT / (module.replace(".", "/") + ".py")


def one_error_line(completed: subprocess.CompletedProcess) -> str:
    """The error line of a refused command: its last stderr line, the only one starting with `error:`, and no
    traceback (libraries may log progress lines such as Lightning's "Seed set to" before it)."""
    assert completed.returncode not in (0, None), completed.stdout
    assert "Traceback" not in completed.stderr, completed.stderr
    lines = [line for line in completed.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error")]
    assert len(errors) == 1 and lines[-1] == errors[0] and errors[0].startswith("error: "), completed.stderr
    return errors[0]


def run_script(script: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    return subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, env=env, timeout=300, cwd=ROOT
    )


def test_every_command_reports_user_errors_through_run_cli():
    """A new command that forgets `run_cli` would print tracebacks for bad input; the scripts kept for
    upstream users are thin and run the same commands."""
    commands = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    modules = {target.split(":")[0] for target in commands.values()}
    assert modules == {f"lit_gpt.cli.{path.stem}" for path in (ROOT / "lit_gpt/cli").glob("[!_]*.py")}
    for module in modules:
        text = (ROOT / (module.replace(".", "/") + ".py")).read_text()
        assert "run_cli(" in text and "sys.exit(" not in text, module
    for script in ENTRY_POINTS:
        text = script.read_text()
        assert "from lit_gpt.cli." in text and "sys.path" not in text, script


@pytest.fixture(scope="module")
def damaged(tmp_path_factory):
    """A data folder, and a truncated checkpoint of a model that fits it."""
    root = tmp_path_factory.mktemp("damaged")
    corpus = build_corpus(root / "corpus")
    config = Config.from_name("micro", vocab_size=101)
    good = root / "good.pth"
    torch.save(
        {"model": GPT(config).state_dict(), "config": config.asdict(), "train": {"train_data_dir": str(corpus)}}, good
    )
    truncated = root / "run" / "iter-000004-ckpt.pth"
    truncated.parent.mkdir()
    truncated.write_bytes(good.read_bytes()[:5000])
    return {"corpus": corpus, "ckpt": truncated, "probe": corpus / "probe_valid.jsonl"}


def checkpoint_commands(damaged, out: Path) -> dict[str, list[str]]:
    """How each entry point that reads a training checkpoint is given one."""
    ckpt, probe = str(damaged["ckpt"]), str(damaged["probe"])
    return {
        "tinyllama.py": cli_args(damaged["corpus"], out, "--resume", ckpt),  # reads one through --resume
        "eval_sink_pretrain.py": ["--load_from", ckpt, "--probe", probe],
        "generate.py": ["--load_from", ckpt, "--prompt", "w1 w2"],
        "eval_streaming.py": ["--load_from", ckpt, "--text", probe],
        "report.py": [str(damaged["ckpt"].parent), "--probe", probe],
        "export_hf.py": ["--load_from", ckpt, "--out_dir", str(out / "hf")],
    }


@pytest.mark.slow
def test_a_truncated_checkpoint_is_one_line_at_every_entry_point_that_reads_one(damaged, tmp_path):
    commands = checkpoint_commands(damaged, tmp_path)
    readers = {script.name for script in ENTRY_POINTS if "load_from" in command_module(script).read_text()}
    assert readers <= set(commands), f"entry points reading checkpoints without a test: {readers - set(commands)}"
    for name, args in commands.items():
        script = ROOT / "pretrain" / name
        if not script.exists():
            continue
        line = one_error_line(run_script(script, *args))
        assert str(damaged["ckpt"]) in line and "cannot be read" in line, (name, line)
    assert not (tmp_path / "hf").exists() or not any((tmp_path / "hf").iterdir())


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, expected",
    [
        (["--model.vocab_size", "-5"], "error: vocab_size must be a positive number, got -5"),
        (["--model.block_size", "-1"], "error: block_size must be a positive number, got -1"),
        (["--max_step", "0"], f"error: max_step must be positive, got 0; the range is 1..{2**63 - 1}"),
    ],
)
def test_training_command_line_refusals_are_one_line(args, expected):
    line = one_error_line(run_script(ROOT / "pretrain/tinyllama.py", "--model_name", "micro", *args))
    assert line == expected


@pytest.mark.slow
def test_bad_yaml_values_tokenizer_and_generation_settings_are_one_line(damaged, tmp_path):
    run_yaml = tmp_path / "run.yaml"
    run_yaml.write_text("model_name: micro\nlearning_rate: abc\n")
    line = one_error_line(run_script(ROOT / "pretrain/tinyllama.py", "--config", str(run_yaml)))
    assert line == f"error: {run_yaml}: learning_rate must be float, got 'abc'; fix the value in the YAML"
    broken = tmp_path / "tokenizer.json"
    broken.write_text('{"model": ')
    line = one_error_line(
        run_script(ROOT / "pretrain/tinyllama.py", *cli_args(damaged["corpus"], tmp_path, "--tokenizer", str(broken)))
    )
    assert str(broken) in line
    line = one_error_line(
        run_script(ROOT / "pretrain/generate.py", "--load_from", str(damaged["ckpt"]), "--prompt", "w1", "--top_k", "0")
    )
    assert line.startswith("error: top_k must be >= 1")


def test_run_cli_prints_a_user_error_as_one_line_and_exits_1(capsys):
    def fails():
        raise UserError("bad thing in\nfile.txt;   do this")

    with pytest.raises(SystemExit) as exit_info:
        run_cli(fails)
    assert exit_info.value.code == 1
    assert capsys.readouterr().err == "error: bad thing in file.txt; do this\n"
    assert run_cli(lambda: 5) == 5


def test_a_bug_keeps_its_traceback():
    with pytest.raises(ZeroDivisionError):
        run_cli(lambda: 1 / 0)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_training_start_up_exits_cleanly(damaged, tmp_path, monkeypatch, capsys, signum):
    import lit_gpt.training.trainer as trainer

    real_build_data = trainer.build_data

    def signalled_while_loading(*args):
        os.kill(os.getpid(), signum)
        return real_build_data(*args)

    monkeypatch.setattr(trainer, "build_data", signalled_while_loading)
    previous = signal.getsignal(signum)
    args = parse_args(cli_args(damaged["corpus"], tmp_path, "--max_step", "2"), exit_on_error=False)
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: trainer.setup(args))
    assert exit_info.value.code == 128 + signum
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: interrupted by {signal.Signals(signum).name}")
    assert signal.getsignal(signum) is previous
    assert not list((tmp_path / "run").glob("iter-*"))


@pytest.mark.slow
def test_the_open_model_evaluation_refuses_a_damaged_folder_in_one_line(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2
    )
    transformers.LlamaForCausalLM(config).save_pretrained(tmp_path / "model")
    weights = tmp_path / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])
    line = one_error_line(run_script(ROOT / "eval_sink_open_source.py", "--model", str(tmp_path / "model")))
    assert str(tmp_path / "model") in line
