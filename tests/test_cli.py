"""Every command speaks one language: the same flag for the same thing, --config / --print_config, help for
every option, "did you mean" for a litgpt-style name, and --help without importing torch."""

import os
import re
import subprocess
import sys

import pytest
import yaml

from lit_gpt.core.flags import ALIASES, add_aliases, command_name, did_you_mean, new_parser
from lit_gpt.training.run_config import parse_args

# Commands whose --help must answer without torch (the trainer, the evaluations, the exports).
LIGHT_COMMANDS = ("train", "eval_sink", "report", "eval_hf", "generate", "streaming", "export_hf")


@pytest.mark.parametrize("module", LIGHT_COMMANDS)
def test_help_documents_every_option_with_readable_types_and_imports_no_torch(module):
    code = (
        f"import sys; from lit_gpt.cli.{module} import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO TORCH')"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "200"}
    )
    text = done.stdout
    assert done.returncode == 0 and text.rstrip().endswith("NO TORCH"), done.stderr
    assert "<class" not in text
    options = option_help(text)
    assert "--config" in options and "--print_config" in options
    assert [name for name, help in options.items() if help.startswith(("(type", "(required"))] == []


def option_help(text: str) -> dict[str, str]:
    """Each option's names in a --help text -> the start of its help (on its line or the next)."""
    lines = text.splitlines()
    options = {}
    for index, line in enumerate(lines):
        if line.startswith("  -"):
            names, _, rest = line.strip().partition("  ")
            help = rest.strip() or (lines[index + 1].strip() if index + 1 < len(lines) else "")
            options.update(dict.fromkeys(re.findall(r"--[\w.\-]+", names), help))
    return options


def test_the_trainer_help_explains_resume_and_logger_values(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "`auto`: newest if any" in text and "`tensorboard`" in text and "`csv`/`none`" in text


def test_one_flag_per_concept_with_the_old_spellings_as_aliases():
    parser = new_parser("test")
    parser.add_argument("--probe", default="a")
    parser.add_argument("--eps", type=float, default=0.3)
    parser.add_argument("--out", default=None)
    add_aliases(parser)
    for flag in ("--probe_file", "--probe", "--text", "--probe_path"):
        assert parser.parse_args([flag, "p.jsonl"]).probe == "p.jsonl"
    assert parser.parse_args(["--sink_eps", "0.2"]).eps == parser.parse_args(["--eps", "0.2"]).eps == 0.2
    assert parser.parse_args(["--out_dir", "o"]).out == parser.parse_args(["--output_dir", "o"]).out == "o"
    # the canonical spelling comes first in the help
    assert parser.format_help().index("--probe_file") < parser.format_help().index("--probe PROBE_FILE")
    assert set(ALIASES) == {"--probe_file", "--sink_eps", "--sink_k", "--out_dir"}


def test_the_report_and_hf_evaluation_take_the_trainers_flag_names():
    from lit_gpt.cli.eval_hf import parse as parse_hf
    from lit_gpt.cli.report import parse as parse_report

    report = parse_report(["run_a", "--probe_file", "p.jsonl", "--sink_eps", "0.2", "--out_dir", "out"])
    assert (str(report["probe"]), report["eps"], str(report["out"])) == ("p.jsonl", 0.2, "out")
    assert parse_report(["run_a", "--probe", "p.jsonl", "--eps", "0.2"]) == {**report, "out": None}
    hf = parse_hf(["--model", "m", "--probe_file", "p.jsonl", "--sink_k", "3", "--sink_eps", "0.1"])
    assert (str(hf["probe"]), hf["positions"], hf["eps"]) == ("p.jsonl", 3, 0.1)
    assert parse_hf(["--model", "m", "--probe", "p.jsonl", "--positions", "3", "--eps", "0.1"]) == hf


def test_a_config_file_gives_the_flags_values(tmp_path):
    from lit_gpt.cli.report import parse as parse_report

    config = tmp_path / "report.yaml"
    config.write_text("runs: [a, b]\neps: 0.25\n")
    assert parse_report(["--config", str(config)])["eps"] == 0.25
    assert parse_report(["--config", str(config), "--sink_eps", "0.5"])["eps"] == 0.5


def test_the_trainer_prints_its_merged_config_as_a_run_yaml_it_accepts(tmp_path, capsys):
    run_yaml = tmp_path / "run.yaml"
    run_yaml.write_text("model_name: micro\nlearning_rate: 0.002\nmodel: {n_layer: 3}\n")
    with pytest.raises(SystemExit) as stop:
        parse_args(["--config", str(run_yaml), "--max_step", "7", "--print_config"])
    printed = capsys.readouterr().out
    assert stop.value.code == 0
    settings = yaml.safe_load(printed)
    assert (settings["learning_rate"], settings["max_step"], settings["model"]) == (0.002, 7, {"n_layer": 3})
    (tmp_path / "printed.yaml").write_text(printed)
    again = parse_args(["--config", str(tmp_path / "printed.yaml")], exit_on_error=False)
    assert again.to_dict() == {
        **parse_args(["--config", str(run_yaml), "--max_step", "7"]).to_dict(),
        "data_yaml_file": str(tmp_path / "printed.yaml"),
    }


def test_a_litgpt_flag_name_gets_a_did_you_mean(capsys):
    with pytest.raises(SystemExit) as stop:
        parse_args(["--model_name", "micro", "--max_steps", "3"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1
    assert "--max_steps: did you mean --max_step?" in err
    assert (
        did_you_mean("unrecognized arguments: --learnig_rate 1", ["--learning_rate"])
        == "--learnig_rate: did you mean --learning_rate?"
    )
    assert did_you_mean("unrecognized arguments: --zzz 1", ["--learning_rate"]) == ""


@pytest.mark.parametrize(
    "argv0, shown",
    [
        ("/home/me/.venv/bin/sink-train", "sink-train"),
        ("pretrain/tinyllama.py", "pretrain/tinyllama.py"),
        ("/abs/path/pretrain/tinyllama.py", "tinyllama.py"),
    ],
)
def test_the_usage_line_names_the_command_as_typed(argv0, shown):
    assert command_name(argv0) == shown
