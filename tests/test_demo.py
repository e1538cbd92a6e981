"""`make demo` (scripts/demo.sh): the smoke mode runs the whole pipeline -- data check, softmax, sigmoid
without normalisation and KV-bias runs, sink evaluation, the table and plots -- in a few steps."""

import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from test_scripts import REPO, SCRIPTS, build_small_embedded, script_env


def run_demo(tmp_path: Path, **extra: str) -> tuple[subprocess.CompletedProcess, Path]:
    data, probe = build_small_embedded(tmp_path / "data")
    checkpoints = tmp_path / "checkpoints"
    env = script_env(data, probe, checkpoints, DEMO_SMOKE="1", **extra)
    del env["MAX_STEPS"]  # the smoke mode picks its own handful of steps
    result = subprocess.run(
        ["bash", str(SCRIPTS / "demo.sh")], cwd=REPO, env=env, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result, checkpoints


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """One smoke demo for the tests that read its output (each takes minutes): 7 cores given, so the threads
    per run come from the core count (7 // 3 = 2), not from the one-thread minimum."""
    return run_demo(tmp_path_factory.mktemp("demo"), DEMO_CORES="7")


@pytest.mark.slow
def test_demo_smoke_prints_the_sink_table_with_all_three_variants_and_writes_plots(demo_run):
    result, checkpoints = demo_run
    table = result.stdout.split("=== Attention sink at the cpu scale")[1]
    assert "| run | variant | Sink_1 (%) | Sink* (%) | valid loss |" in table
    rows = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| ") and "_cpu" in line}
    assert set(rows) == {"softmax_cpu", "sigmoid_no_norm_cpu", "kv_bias_cpu"}
    assert "sigmoid norm:none" in rows["sigmoid_no_norm_cpu"]
    assert rows["kv_bias_cpu"].split("|")[4].strip() != "--"  # Sink* is measured for the key slot
    for run in rows:
        assert (checkpoints / run / "iter-000003-ckpt.pth").is_file()
        assert list((checkpoints / run / "plots").glob("*.png"))
    assert (checkpoints / "demo_cpu_report" / "report.png").is_file()


@pytest.mark.slow
def test_the_runs_train_concurrently_with_threads_from_the_core_count(demo_run):
    result, _ = demo_run
    assert "Training softmax sigmoid_no_norm kv_bias concurrently, 2 thread(s) each, on 7 core(s)." in result.stdout
    assert re.search(r"^fp32 matmul peak of this machine: \d+ GFLOP/s on 7 core\(s\)", result.stdout, re.MULTILINE)
    for name in ("softmax", "sigmoid_no_norm", "kv_bias"):
        assert f"[{name}] " in result.stdout  # each run's lines carry its name


def test_a_bad_core_count_is_one_line(tmp_path):
    env = script_env(tmp_path, tmp_path / "probe.jsonl", tmp_path / "checkpoints", DEMO_SMOKE="1", DEMO_CORES="two")
    result = subprocess.run(
        ["bash", str(SCRIPTS / "demo.sh")], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == "error: DEMO_CORES must be a positive number of cores, got 'two'"


@pytest.mark.slow
def test_stopping_the_demo_stops_every_training_run(tmp_path):
    data, probe = build_small_embedded(tmp_path / "data")
    checkpoints = tmp_path / "checkpoints"
    env = script_env(data, probe, checkpoints, DEMO_SMOKE="1", MAX_STEPS="100000")
    demo = subprocess.Popen(
        ["bash", str(SCRIPTS / "demo.sh")],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        for line in demo.stdout:  # wait until the runs have started
            if line.startswith("[softmax] eval step 0"):
                break
        demo.send_signal(signal.SIGTERM)
        assert demo.wait(timeout=60) == 143
    finally:
        demo.kill()
        demo.stdout.close()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and trainers_writing_to(checkpoints):
        time.sleep(0.5)
    assert not trainers_writing_to(checkpoints)


def trainers_writing_to(checkpoints: Path) -> list[str]:
    found = subprocess.run(["pgrep", "-f", str(checkpoints)], capture_output=True, text=True)
    return found.stdout.split()
