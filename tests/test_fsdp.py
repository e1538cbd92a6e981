"""`--strategy fsdp` (FSDP2, `lit_gpt.training.fsdp`): sharded training on two CPU processes (gloo) computes what one
process computes, writes the same checkpoint, and resumes.

The model has a tied embedding, a learned sink token and k*/v* slots of one row, which two processes
shard unevenly (one of them holds an empty shard).
"""

import os
import signal
import socket
import subprocess
import sys

import pytest
import torch
from test_scripts import NODE_SETTINGS
from test_trainer import ROOT, build_corpus, cli_args, metric_series, run_cli

from lit_gpt.training.checkpoint import list_checkpoints, load_model
from lit_gpt.training.fsdp import optimizer_state_by_name, optimizer_state_by_position
from lit_gpt.training.run_config import parse_args
from lit_gpt.training.train_args import ArgsError
from lit_gpt.training.trainer import setup

MODEL = (
    "--model.tie_embeddings",
    "true",
    "--model.sink_tokens",
    "1",
    "--model.k_bias",
    "true",
    "--model.v_bias",
    "true",
)
# Six steps, checkpoints at 3 and 6; 32-true so that a GPU machine compares at fp32 tolerance too.
COMMON = (
    *MODEL,
    "--max_step",
    "6",
    "--save_step_interval",
    "3",
    "--eval_step_interval",
    "3",
    "--eval_iters",
    "1",
    "--precision",
    "32-true",
)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return build_corpus(tmp_path_factory.mktemp("corpus"))


pytestmark = pytest.mark.usefixtures("one_thread")


def test_optimizer_state_is_saved_keyed_by_position_as_an_unsharded_optimizer_keys_it():
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.LayerNorm(2))
    optimizer = torch.optim.AdamW(
        [
            {"params": [model[0].weight, model[1].weight]},
            {"params": [model[0].bias, model[1].bias], "weight_decay": 0.0},
        ]
    )
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    plain = optimizer.state_dict()
    names = ["0.weight", "1.weight", "0.bias", "1.bias"]  # in the optimizer's order, across its groups
    by_name = optimizer_state_by_name(plain, names)
    assert list(by_name["state"]) == names and by_name["param_groups"][1]["params"] == names[2:]
    assert by_name["param_groups"][1]["weight_decay"] == 0.0
    assert optimizer_state_by_position(by_name) == plain
    with pytest.raises(ValueError, match="holds 4 parameters, the optimizer 3"):
        optimizer_state_by_name(plain, names[:3])


@pytest.mark.parametrize(
    "flags, match",
    [
        (("--devices", "1"), r"strategy=fsdp shards the model over processes but this run has one \(devices=1"),
        (("--devices", "2", "--precision", "16-mixed"), r"precision='16-mixed' does not work with strategy=fsdp"),
    ],
)
def test_fsdp_refuses_one_process_and_precisions_it_cannot_run_before_anything_is_written(
    corpus, tmp_path, flags, match
):
    with pytest.raises(ArgsError, match=match):
        setup(parse_args(cli_args(corpus, tmp_path, "--strategy", "fsdp", *flags), exit_on_error=False))
    assert not (tmp_path / "run").exists()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch_through_scripts(args: list[str]) -> subprocess.CompletedProcess:
    """The trainer as scripts/lib.sh's `launch` starts it for two devices: `fabric run`, torchrun underneath."""
    env = {key: value for key, value in os.environ.items() if key not in NODE_SETTINGS}
    env.update(
        SCALE="cpu",
        NUMBER_OF_GPUS="2",
        MAIN_PORT=str(free_port()),
        PYTHON=sys.executable,
        OMP_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
    )
    process = subprocess.Popen(
        ["bash", "-c", 'source scripts/lib.sh && launch "$@"', "launch", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=300)
    finally:
        if process.poll() is None:  # timed out: stop torchrun and its workers with it
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def _assert_checkpoints_match(sharded: dict, single: dict) -> None:
    """Same entries, same optimizer layout, and tensors equal within fp32 tolerance."""
    assert sharded.keys() == single.keys()
    assert sharded["model"].keys() == single["model"].keys()
    for name, tensor in single["model"].items():
        torch.testing.assert_close(sharded["model"][name], tensor, rtol=1e-4, atol=1e-5, msg=name)
    assert sharded["optimizer"]["param_groups"] == single["optimizer"]["param_groups"]
    assert sharded["optimizer"]["state"].keys() == single["optimizer"]["state"].keys()
    for index, entry in single["optimizer"]["state"].items():
        for key, tensor in entry.items():
            torch.testing.assert_close(sharded["optimizer"]["state"][index][key], tensor, rtol=1e-4, atol=1e-6)
    assert (sharded["step_count"], sharded["tokens_seen"]) == (single["step_count"], single["tokens_seen"])


@pytest.mark.slow
def test_fsdp_on_two_cpu_processes_matches_one_process_and_resumes(corpus, tmp_path):
    setup(parse_args(cli_args(corpus, tmp_path / "single", *COMMON)))
    single = tmp_path / "single" / "run"

    # Sharded: three steps with the processes Fabric starts itself, then a resume to six through
    # scripts/lib.sh (`fabric run`), with activation checkpointing, whose wrappers a checkpoint must not
    # see: the resumed run reads parameter names as an unwrapped model writes them.
    sharded_args = (*COMMON, "--devices", "2", "--strategy", "fsdp")
    first = run_cli(cli_args(corpus, tmp_path / "fsdp", *sharded_args, "--max_step", "3"))
    assert first.returncode == 0, first.stderr[-3000:]
    assert "2 process(es), gradient accumulation 1" in first.stdout
    resumed = launch_through_scripts(
        cli_args(corpus, tmp_path / "fsdp", *sharded_args, "--resume", "auto", "--activation_checkpointing", "true")
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resuming from" in resumed.stdout and "iter-000003-ckpt.pth" in resumed.stdout
    sharded = tmp_path / "fsdp" / "run"

    # The probe loss at step 0 is computed on the whole probe set by every process: equal only if the
    # sharded model starts from the single process' weights.
    for metric in ("metric/train_loss", "gradient_norm", "lr", "metric/probe_loss", "metric/sink_1", "total_tokens"):
        expected = metric_series(single / "metrics.csv", metric)
        got = metric_series(sharded / "metrics.csv", metric)
        assert sorted(got) == sorted(expected), metric
        for step, value in expected.items():
            assert got[step] == pytest.approx(value, rel=1e-5, abs=1e-6), (metric, step)
    assert sorted(metric_series(sharded / "metrics.csv", "metric/train_loss")) == list(range(1, 7))

    assert [p.name for p in list_checkpoints(sharded)] == [p.name for p in list_checkpoints(single)]
    for ours, theirs in zip(list_checkpoints(sharded), list_checkpoints(single)):
        _assert_checkpoints_match(torch.load(ours, weights_only=False), torch.load(theirs, weights_only=False))

    # The single-process tools read the sharded run's checkpoint as any other, the tie intact.
    model, checkpoint = load_model(list_checkpoints(sharded)[-1])
    reference, _ = load_model(list_checkpoints(single)[-1])
    assert model.lm_head is None and model.config.tie_embeddings
    tokens = torch.randint(0, model.config.vocab_size, (2, 16))
    torch.testing.assert_close(model(tokens), reference(tokens), rtol=1e-4, atol=1e-5)
    optimizer = torch.optim.AdamW(model.parameters())
    optimizer.load_state_dict(checkpoint["optimizer"])  # an unsharded run resumes the optimizer as it is
