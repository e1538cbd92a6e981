"""Run YAML values are checked and converted like the flags they stand for."""

import pytest

from lit_gpt.training.run_config import parse_args
from lit_gpt.training.train_args import ArgsError


@pytest.mark.parametrize(
    "line, key, expected",
    [
        ("learning_rate: abc", "learning_rate", "float"),
        ("max_step: ten", "max_step", "int"),
        ("weight_decay: [0.1]", "weight_decay", "float"),
        ("n_layer: three", "model.n_layer", "int"),
        ("model: {n_head: many}", "model.n_head", "int"),
        ("train: 3", "train", "dict"),
        ("tokenizer: 5", "tokenizer", "Path or null"),
    ],
)
def test_wrong_yaml_types_name_the_file_and_key(tmp_path, line, key, expected):
    run_yaml = tmp_path / "run.yaml"
    run_yaml.write_text(f"model_name: micro\n{line}\n")
    with pytest.raises(ArgsError, match=rf"^{run_yaml}: {key} must be {expected}, got .*; fix the value in the YAML$"):
        parse_args(["--config", str(run_yaml)], exit_on_error=False)


def test_yaml_values_are_converted_like_flags(tmp_path):
    run_yaml = tmp_path / "run.yaml"
    # YAML 1.1 reads 1e-3 (no dot) as a string; the flag parser makes it a float, so must the YAML reader.
    run_yaml.write_text("model_name: micro\nlearning_rate: 1e-3\nmin_lr: 1e-4\nmodel: {window_size: 8}\n")
    args = parse_args(["--config", str(run_yaml)], exit_on_error=False)
    assert args.learning_rate == 0.001 and isinstance(args.learning_rate, float) and args.min_lr == 1e-4
    assert args.model == {"window_size": 8}
    assert parse_args(["--config", str(run_yaml), "--learning_rate", "0.5"], exit_on_error=False).learning_rate == 0.5


def test_parse_errors_exit_with_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--model_name", "micro", "--max_step", "many"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "error: --max_step: expected int, got 'many' (see --help)\n"


def test_a_yaml_that_is_not_utf8_or_not_yaml_is_one_clear_error(tmp_path):
    run_yaml = tmp_path / "run.yaml"
    run_yaml.write_bytes(b"model_name: micro\nout_name: caf\xe9\n")
    with pytest.raises(ArgsError, match=rf"^{run_yaml} is not UTF-8 text"):
        parse_args(["--config", str(run_yaml)], exit_on_error=False)
    run_yaml.write_text("model_name: [micro\n")
    with pytest.raises(ArgsError, match=rf"^{run_yaml} is not valid YAML"):
        parse_args(["--config", str(run_yaml)], exit_on_error=False)


def test_run_arguments_do_not_depend_on_how_they_are_read():
    """`TrainArgs` is read by `run_config` and used by `experiments`; it imports neither (no cycle)."""
    import ast
    from pathlib import Path

    import lit_gpt.training.train_args

    tree = ast.parse(Path(lit_gpt.training.train_args.__file__).read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not imported & {"lit_gpt.training.run_config", "lit_gpt.reporting.sweeps"}


@pytest.mark.parametrize(
    "line, message",
    [
        ("learning_rate: .nan", "learning_rate is nan, not a finite number"),
        ("weight_decay: .inf", "weight_decay is inf, not a finite number"),
        ("beta2: -.inf", "beta2 is -inf, not a finite number"),
        ("train: {wiki: .nan, books: 1.0}", "train.wiki is nan, not a finite number"),
        ("seed: 4294967296", "seed must be >= 0, got 4294967296; the range is 0..4294967295"),
        ("micro_batch_size: 0", "micro_batch_size must be positive, got 0"),
        ("global_batch_size: 9223372036854775808", "global_batch_size must be positive, got 9223372036854775808"),
    ],
)
def test_yaml_numbers_nothing_can_use_are_refused_when_the_file_is_read(tmp_path, line, message):
    """NaN passes every `<` check and would surface steps later inside the optimizer or numpy; an integer beyond
    what consumes it (numpy's 32-bit seed, int64 indices) would be replaced or overflow."""
    run_yaml = tmp_path / "run.yaml"
    run_yaml.write_text(f"model_name: micro\n{line}\n")
    with pytest.raises(ArgsError, match=rf"^{run_yaml}: {message}") as refused:
        parse_args(["--config", str(run_yaml)], exit_on_error=False)
    assert refused.value.exit_status == 2


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--seed", "-1"], "seed must be >= 0, got -1"),
        (["--eval_iters", "0"], "eval_iters must be positive, got 0"),
        (
            ["--max_step", str(2**62), "--global_batch_size", "4", "--micro_batch_size", "4"],
            "max_step * global_batch_size",
        ),
    ],
)
def test_flag_numbers_out_of_range_are_refused_in_one_line(capsys, flags, message):
    with pytest.raises(SystemExit) as stop:
        parse_args(["--model_name", "micro", *flags])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.startswith(f"error: {message}") and err.count("\n") == 1, err


@pytest.mark.parametrize(
    "mixture, message",
    [
        ("train: {wiki: -1.0, books: 2.0}", "train weights must be >= 0, got {'wiki': -1.0}"),
        ("train: {wiki: 0.0, books: 0.0}", "need at least one positive weight"),
    ],
)
def test_mixture_weights_are_shares(tmp_path, mixture, message):
    run_yaml = tmp_path / "run.yaml"
    run_yaml.write_text(f"model_name: micro\n{mixture}\n")
    with pytest.raises(ArgsError, match=message):
        parse_args(["--config", str(run_yaml)], exit_on_error=False)
