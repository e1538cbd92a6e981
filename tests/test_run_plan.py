"""A run's flat arguments become one checked plan of typed groups, built once."""

from pathlib import Path

import pytest

import lit_gpt.cli.train as train_cli
from lit_gpt.data.transforms import InputTransforms
from lit_gpt.model.attention.runtime import AttentionRuntime
from lit_gpt.model.config import Config
from lit_gpt.training.run_config import parse_args, parse_plan
from lit_gpt.training.run_plan import RunPlan, resolve
from lit_gpt.training.train_args import ArgsError, TrainArgs

MICRO = ["--model_name", "micro", "--eval_sink", "false"]


def test_the_plan_holds_typed_objects_built_from_the_flags():
    flags = [
        *MICRO,
        "--model.attn_score",
        "sigmoid",
        "--attn_backend",
        "eager",
        "--attn_chunk_size",
        "8",
        "--fixed_token_pos",
        "0",
        "--fixed_token_id",
        "3",
        "--random_token_start",
        "2",
        "--random_token_end",
        "5",
        "--beta1",
        "0.8",
        "--beta2",
        "0.9",
        "--log_step_interval",
        "7",
        "--out_name",
        "run",
        "--checkpoint_root",
        "elsewhere",
    ]
    plan = parse_plan(flags, exit_on_error=False)
    assert plan.model == Config.from_name("micro", attn_score="sigmoid")
    assert plan.attention == AttentionRuntime("eager", 8)
    assert plan.data.transforms == InputTransforms(fixed_token=(0, 3), random_token_range=(2, 5))
    assert plan.optim.betas == (0.8, 0.9)
    assert plan.log.step_interval == 7
    assert plan.out_dir == plan.run.out_dir == Path("elsewhere/run")
    # The flat arguments checkpoints store, and older checkpoints' transforms read from them, agree.
    assert plan.arguments == parse_args(flags, exit_on_error=False).to_dict()
    assert InputTransforms.of_run(plan.arguments) == plan.data.transforms


def test_empty_folders_and_tokenizer_fall_back_to_the_train_folder():
    plan = parse_plan([*MICRO, "--train_data_dir", "shards"], exit_on_error=False)
    assert plan.data.val_dir == plan.data.train_dir == plan.probe.tokenizer == Path("shards")
    assert not plan.data.transforms and plan.data.train_mixture == {} and plan.data.valid_domains == ()
    plan = parse_plan(
        [*MICRO, "--train_data_dir", "shards", "--val_data_dir", "held_out", "--tokenizer", "tok.json"],
        exit_on_error=False,
    )
    assert (plan.data.val_dir, plan.probe.tokenizer) == (Path("held_out"), Path("tok.json"))


@pytest.mark.parametrize("ignore_loss, prefix_tokens, expected", [(0, 0, 0), (3, 0, 3), (1, 4, 3), (5, 4, 5)])
def test_ignored_predictions_follow_the_loss_rule(ignore_loss, prefix_tokens, expected):
    flags = [*MICRO, "--ignore_loss", str(ignore_loss), "--model.prefix_tokens", str(prefix_tokens)]
    assert parse_plan(flags, exit_on_error=False).data.ignored_predictions == expected


def test_the_plan_does_not_follow_later_edits_of_the_arguments():
    args = TrainArgs(model_name="micro", eval_sink=False, model={"n_layer": 2})
    plan = resolve(args)
    args.model["n_layer"] = 3
    args.max_step = 5
    assert plan.model.n_layer == 2 and plan.arguments["model"] == {"n_layer": 2}
    assert plan.optim.max_step == plan.arguments["max_step"] == TrainArgs.max_step


def test_resolving_checks_like_validate():
    with pytest.raises(ArgsError, match="min_lr=0.1 is above learning_rate=0.01"):
        resolve(TrainArgs(model_name="micro", learning_rate=0.01, min_lr=0.1))


def test_the_training_command_checks_its_arguments_once(monkeypatch):
    checked, planned = [], []
    real_check = TrainArgs.checked_model

    def counted(self):
        checked.append(self)
        return real_check(self)

    monkeypatch.setattr(TrainArgs, "checked_model", counted)
    monkeypatch.setattr("lit_gpt.training.trainer.setup", planned.append)
    train_cli.main([*MICRO, "--max_step", "3"])
    assert len(checked) == 1 and len(planned) == 1
    assert isinstance(planned[0], RunPlan) and planned[0].optim.max_step == 3
