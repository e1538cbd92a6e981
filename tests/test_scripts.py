"""scripts/: each family's sweep script runs train -> sink eval -> report end to end at the cpu scale, on
small shards with the embedded corpus' domains, for two optimizer steps.

The test per family runs one value; `SCRIPTS_FULL=1` also runs every script (one value each), which
takes several minutes on 2 cores.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from data_fixtures import sentences, write_jsonl

from lit_gpt.data.prepare import prepare

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"


def build_small_embedded(root: Path) -> tuple[Path, Path]:
    """(shard folder, probe file) with the embedded corpus' three domains and a 300-entry BPE."""
    docs = root / "docs"
    for index, domain in enumerate(("code", "tests", "docs")):
        write_jsonl(docs / f"{domain}-0.jsonl", sentences(index, 80))
    probe = root / "probe.jsonl"
    out = prepare(
        source="jsonl",
        input_dir=docs,
        output_dir=root / "shards",
        vocab_size=300,
        valid_fraction=0.2,
        probe_count=10,
        probe_path=probe,
        num_workers=1,
    )
    return out, probe


@pytest.fixture(scope="module")
def small_data(tmp_path_factory) -> tuple[Path, Path]:
    return build_small_embedded(tmp_path_factory.mktemp("small_embedded"))


def offline_wandb_env(home: Path) -> dict[str, str]:
    """wandb (the cpu scale's dashboard) offline and silent, with its caches and settings under `home`."""
    return {
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "WANDB_CACHE_DIR": str(home / "cache"),
        "WANDB_CONFIG_DIR": str(home / "config"),
        "WANDB_DATA_DIR": str(home / "data"),
    }


def script_env(data: Path, probe: Path, checkpoints: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SCALE", "MAX_STEPS", "NUMBER_OF_GPUS", "WANDB_", "REPORT_WANDB"))
    }
    env.update(offline_wandb_env(checkpoints.parent / "wandb_home"))
    # Two-step runs test the scripts' plumbing; compiling each (the cpu scale's default) would dominate the
    # suite, and tests/test_compile.py covers compiled training.
    env.update(
        SCALE="cpu",
        MAX_STEPS="2",
        DATA_DIR=str(data),
        PROBE_FILE=str(probe),
        CHECKPOINT_ROOT=str(checkpoints),
        TRAIN_ARGS="--eval_iters 1 --progress_bar false --compile false",
        FILL_DOCS="0",
        PYTHON=sys.executable,
    )
    env.update(extra)
    return env


def run_script(script: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    result = subprocess.run(
        ["bash", str(SCRIPTS / script), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def check_run(checkpoints: Path, run: str, sweep: str) -> dict:
    run_dir = checkpoints / run
    assert (run_dir / "iter-000002-ckpt.pth").is_file()
    evaluation = json.loads((run_dir / "sink_eval.json").read_text())
    assert evaluation["checkpoint"].endswith("iter-000002-ckpt.pth")
    assert sorted(p.name for p in (run_dir / "plots").glob("*.png"))
    report = (checkpoints / f"{sweep}_cpu_report" / "report.md").read_text()
    assert f"| {run} |" in report
    assert (checkpoints / f"{sweep}_cpu_report" / "report.csv").is_file()
    return evaluation


FAMILIES = [
    # (script, argument, run folder, sweep, a property of the run's model that shows the right config ran)
    ("optimization/run_lr.sh", "1e-3", "tinyllama_60M_lr1e-3_cpu", "lr", "softmax"),
    ("data_distribution/run_fix_token.sh", "1", "tinyllama_60M_fix_position1_cpu", "fix_token", "softmax"),
    ("loss_function/run_prefix.sh", "2", "tinyllama_60M_prefix2_cpu", "prefix", "prefix:2"),
    ("model_architecture/run_kv_bias.sh", "kv_bias", "tinyllama_60M_kv_bias_cpu", "kv_bias", "k_bias"),
    (
        "sink_removal/run_sink_removal.sh",
        "gate_headwise",
        "tinyllama_60M_gate_headwise_cpu",
        "sink_removal",
        "gate:headwise",
    ),
    ("gpt2/run_gpt2.sh", "kv_bias", "gpt2_small_kv_bias_cpu", "gpt2", "k_bias/head v_bias/head pos:learnable"),
]
# The model a sweep trains at the cpu scale, where it is not the tiny preset.
CPU_MODEL = {"gpt2": "gpt2_tiny"}


@pytest.mark.slow
@pytest.mark.parametrize("script,value,run,sweep,variant", FAMILIES, ids=[f[0].split("/")[0] for f in FAMILIES])
def test_family_script_trains_evaluates_and_reports(small_data, tmp_path, script, value, run, sweep, variant):
    checkpoints = tmp_path / "checkpoints"
    run_script(script, value, env=script_env(*small_data, checkpoints))
    evaluation = check_run(checkpoints, run, sweep)
    assert variant in evaluation["variant"]
    composed = (checkpoints / run / "run.yaml").read_text()
    assert f"model_name: {CPU_MODEL.get(sweep, 'tiny')}\n" in composed and str(small_data[0]) in composed


def test_missing_dataset_names_the_preprocess_command(tmp_path):
    env = script_env(tmp_path / "nothing", tmp_path / "probe.jsonl", tmp_path / "checkpoints")
    result = subprocess.run(
        ["bash", str(SCRIPTS / "optimization" / "run_lr.sh"), "1e-3"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    assert "bash preprocess/run_preprocess.sh --source embedded --vocab_size 512" in result.stderr
    assert not list((tmp_path / "checkpoints").glob("*/iter-*"))


def test_shards_built_for_a_larger_vocabulary_are_refused_before_training(small_data, tmp_path):
    data = tmp_path / "shards"
    subprocess.run(["cp", "-r", str(small_data[0]), str(data)], check=True)
    meta = data / "meta.json"
    meta.write_text(meta.read_text().replace('"vocab_size": 300', '"vocab_size": 8192'))
    result = subprocess.run(
        ["bash", str(SCRIPTS / "optimization" / "run_lr.sh"), "1e-3"],
        cwd=REPO,
        env=script_env(data, small_data[1], tmp_path / "checkpoints"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    assert "8192-entry tokenizer, more than the model's vocab_size=512" in result.stderr
    assert "--vocab_size 512" in result.stderr


# A script that sweeps nothing takes no arguments; one that sweeps values takes no flags among them.
REFUSED = [
    ("run_default.sh", ["--max_step", "3"], "takes no arguments, got '--max_step 3'"),
    ("run_sigmoid_1b.sh", ["700"], "takes no arguments, got '700'"),
    ("optimization/run_lr.sh", ["1e-3", "--max_step", "3"], "takes no flags, got '--max_step 3'"),
    ("model_architecture/run_relpos.sh", ["--alibi"], "takes no flags, got '--alibi'"),
    ("demo.sh", ["--max_step", "3"], "takes no arguments, got '--max_step 3'"),
]


@pytest.mark.parametrize("script,args,message", REFUSED, ids=[f"{r[0]} {' '.join(r[1])}" for r in REFUSED])
def test_arguments_a_script_does_not_take_are_refused_in_one_line_before_anything_runs(tmp_path, script, args, message):
    checkpoints = tmp_path / "checkpoints"
    env = script_env(tmp_path / "nothing", tmp_path / "probe.jsonl", checkpoints, NUMBER_OF_GPUS="1")
    result = subprocess.run(
        ["bash", str(SCRIPTS / script), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert "TRAIN_ARGS=" in result.stderr  # says where trainer flags go
    assert not checkpoints.exists()


def test_a_finished_sweep_writes_into_its_tracked_doc_only_when_asked(tmp_path):
    """FILL_DOCS=1 fills scripts/<family>.md; by default, and in smoke runs, the tracked docs are left alone."""
    evaluate = (
        'PYTHON=echo; run_child() { echo "ran $*"; }; RESULTS_DOC=scripts/defaults.md; '
        "evaluate_experiment tinyllama_60M defaults"
    )

    def fills(**settings: str) -> bool:
        result = source_lib(evaluate, NUMBER_OF_GPUS="1", CHECKPOINT_ROOT=str(tmp_path), **settings)
        assert result.returncode == 0, result.stderr
        return "scripts/sweep.py fill --doc scripts/defaults.md" in result.stdout

    assert not fills()
    assert fills(FILL_DOCS="1")
    assert not fills(FILL_DOCS="1", MAX_STEPS="2")


def living(pids: set[str]) -> list[str]:
    """The processes of `pids` that are still running (a zombie has ended; only its parent has not looked)."""
    states = subprocess.run(["ps", "-o", "pid=,stat=,args=", "-p", ",".join(pids)], capture_output=True, text=True)
    return [line for line in states.stdout.splitlines() if line.split()[1][0] != "Z"]


def process_tree(pid: int) -> set[str]:
    """`pid`, every process below it, and every process of its session (those whose parent has gone)."""
    listing = subprocess.run(["ps", "-e", "-o", "pid=,ppid=,sid="], capture_output=True, text=True).stdout
    rows = [line.split() for line in listing.splitlines()]
    tree = {str(pid)} | {row[0] for row in rows if row[2] == str(pid)}
    while True:
        below = {row[0] for row in rows if row[1] in tree} - tree
        if not below:
            return tree
        tree |= below


@pytest.mark.slow
def test_sigterm_stops_a_sweep_script_and_every_process_it_started(small_data, tmp_path):
    checkpoints = tmp_path / "checkpoints"
    env = script_env(*small_data, checkpoints, MAX_STEPS="100000", NUMBER_OF_GPUS="1", PEAK_FLOPS="1e11")
    script = subprocess.Popen(
        ["bash", str(SCRIPTS / "optimization" / "run_lr.sh"), "1e-3"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        for line in script.stdout:  # wait until the trainer trains
            if line.startswith("eval step 0"):
                break
        started = process_tree(script.pid)
        assert len(started) > 1
        script.send_signal(signal.SIGTERM)  # as `timeout` does: to the script alone
        rest, _ = script.communicate(timeout=300)
        assert script.returncode == 143
    finally:
        script.kill()
    assert "Stop requested by signal; saving step" in rest  # the trainer got the signal and saved
    assert "Traceback" not in rest  # nothing below the trainer was stopped behind its back
    deadline = time.monotonic() + 5
    while living(started | process_tree(script.pid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not living(started | process_tree(script.pid))


ALL_SCRIPTS = [
    ("run_default.sh", [], "tinyllama_60M_cpu", "defaults"),
    ("run_defaults_60m.sh", [], "tinyllama_60M_cpu", "defaults"),
    ("run_defaults_1b.sh", [], "tinyllama_1b_cpu", "defaults"),
    ("run_sigmoid_1b.sh", [], "tinyllama_1b_sigmoid_cpu", "defaults"),
    ("optimization/run_batch.sh", ["128"], "tinyllama_60M_batch128_cpu", "batch"),
    ("data_distribution/run_data_amount.sh", ["0.5"], "tinyllama_60M_downsample_ratio0.5_cpu", "data_amount"),
    ("data_distribution/run_random_token.sh", ["0", "1"], "tinyllama_60M_random0_1_cpu", "random_token"),
    ("loss_function/run_decay.sh", ["1e0"], "tinyllama_60M_decay1e0_cpu", "decay"),
    ("loss_function/run_window.sh", ["256"], "tinyllama_60M_window256_cpu", "window"),
    ("model_architecture/run_pos.sh", ["alibi"], "tinyllama_60M_alibi_cpu", "pos"),
    ("model_architecture/run_relpos.sh", ["relative"], "tinyllama_60M_relative_cpu", "pos"),
    ("model_architecture/run_ffn.sh", ["geglu"], "tinyllama_60M_geglu_cpu", "ffn"),
    ("model_architecture/run_postln.sh", [], "tinyllama_60M_postln_cpu", "postln"),
    ("model_architecture/run_sim.sh", ["sigmoid_no_norm"], "tinyllama_60M_sim_sigmoid_no_norm_cpu", "attnsim"),
    ("model_architecture/run_kernel.sh", ["mlp_norm"], "tinyllama_60M_kernel_mlp_norm_cpu", "attnkernel"),
]


def test_every_script_is_covered():
    covered = {f[0] for f in FAMILIES} | {s[0] for s in ALL_SCRIPTS}
    present = {str(p.relative_to(SCRIPTS)) for p in SCRIPTS.rglob("run_*.sh")}
    assert present == covered


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("SCRIPTS_FULL") != "1", reason="every script end to end: set SCRIPTS_FULL=1")
@pytest.mark.parametrize("script,args,run,sweep", ALL_SCRIPTS, ids=[s[0] for s in ALL_SCRIPTS])
def test_every_script_end_to_end(small_data, tmp_path, script, args, run, sweep):
    checkpoints = tmp_path / "checkpoints"
    run_script(script, *args, env=script_env(*small_data, checkpoints))
    check_run(checkpoints, run, sweep)


# ---------------------------------------------------------------------------------- multi-node launch
# tests/test_fsdp.py trains through `launch` on two CPU processes; these check the command each node gets.
NODE_SETTINGS = ("SCALE", "NUMBER_OF_GPUS", "NUM_NODES", "NODE_RANK", "MAIN_ADDRESS", "MAIN_PORT")


def source_lib(commands: str, *args: str, **settings: str) -> subprocess.CompletedProcess:
    """`commands` (`args` as their "$@") run in bash after sourcing scripts/lib.sh with the given node
    settings and no others."""
    env = {key: value for key, value in os.environ.items() if key not in NODE_SETTINGS}
    env.update(SCALE="cpu", PYTHON="python3", **settings)
    return subprocess.run(
        ["bash", "-c", f"source scripts/lib.sh && {commands}", "lib.sh", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def launch_words(*flags: str, **settings: str) -> list[str]:
    result = source_lib('launch_command "$@" && printf "%s\\n" "${LAUNCH_CMD[@]}"', *flags, **settings)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_each_node_of_a_two_node_run_gets_its_fabric_run_command():
    node = {"NUMBER_OF_GPUS": "8", "NUM_NODES": "2", "MAIN_ADDRESS": "10.0.0.1", "MAIN_PORT": "29500"}
    for rank in ("0", "1"):
        # The trainer's own flags follow `--`, so `fabric run` passes on those that share its option names.
        assert launch_words(
            "--config", "run 1.yaml", "--devices", "8", "--strategy", "fsdp", NODE_RANK=rank, **node
        ) == [
            "python3",
            "-m",
            "lightning.fabric.cli",
            "--devices=8",
            "--num-nodes=2",
            f"--node-rank={rank}",
            "--main-address=10.0.0.1",
            "--main-port=29500",
            "--",
            "pretrain/tinyllama.py",
            "--config",
            "run 1.yaml",
            "--devices",
            "8",
            "--strategy",
            "fsdp",
        ]


def test_one_node_runs_one_process_per_device_and_one_device_runs_the_trainer_directly():
    assert launch_words("--max_step", "2", NUMBER_OF_GPUS="2") == [
        "python3",
        "-m",
        "lightning.fabric.cli",
        "--devices=2",
        "--num-nodes=1",
        "--node-rank=0",
        "--main-address=127.0.0.1",
        "--main-port=29400",
        "--",
        "pretrain/tinyllama.py",
        "--max_step",
        "2",
    ]
    one_device = launch_words("--max_step", "2", NUMBER_OF_GPUS="1")
    assert one_device == ["python3", "pretrain/tinyllama.py", "--max_step", "2"]


@pytest.mark.parametrize(
    "settings, message",
    [
        (
            {"NUM_NODES": "2", "NODE_RANK": "2", "MAIN_ADDRESS": "10.0.0.1"},
            "error: NODE_RANK must be in 0 .. 1 with NUM_NODES=2, got '2'",
        ),
        ({"NODE_RANK": "-1"}, "error: NODE_RANK must be in 0 .. 0 with NUM_NODES=1, got '-1'"),
        ({"NUM_NODES": "2"}, "error: NUM_NODES=2 needs MAIN_ADDRESS, the address of node 0"),
        ({"NUM_NODES": "0"}, "error: NUM_NODES must be a positive number, got '0'"),
        ({"NUMBER_OF_GPUS": "two"}, "error: NUMBER_OF_GPUS must be a positive number, got 'two'"),
        ({"MAIN_PORT": "http"}, "error: MAIN_PORT must be a positive number, got 'http'"),
    ],
)
def test_bad_node_settings_are_refused_in_one_line_before_anything_runs(settings, message):
    result = source_lib("echo started", **{"NUMBER_OF_GPUS": "1", **settings})
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith(message) and result.stderr.count("\n") == 1


def test_only_node_0_evaluates_and_reports():
    stubs = (
        'train_experiment() { echo "trained $1"; }; evaluate_experiment() { echo "evaluated $1"; }; '
        "run_experiment run sweep config.yaml"
    )
    two_nodes = {"NUMBER_OF_GPUS": "8", "NUM_NODES": "2", "MAIN_ADDRESS": "10.0.0.1"}
    assert source_lib(stubs, NODE_RANK="0", **two_nodes).stdout.splitlines() == ["trained run", "evaluated run"]
    assert source_lib(stubs, NODE_RANK="1", **two_nodes).stdout.splitlines() == ["trained run"]
