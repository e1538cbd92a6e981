"""`make demo` (scripts/demo.sh): the smoke mode runs the whole pipeline -- data check, softmax, sigmoid
without normalisation and KV-bias runs, sink evaluation, the table and plots -- in a few steps."""

import subprocess
from pathlib import Path

import pytest

from test_scripts import REPO, SCRIPTS, build_small_embedded, script_env


def run_demo(tmp_path: Path, **extra: str) -> tuple[subprocess.CompletedProcess, Path]:
    data, probe = build_small_embedded(tmp_path / "data")
    checkpoints = tmp_path / "checkpoints"
    env = script_env(data, probe, checkpoints, DEMO_SMOKE="1", **extra)
    del env["MAX_STEPS"]  # the smoke mode picks its own handful of steps
    result = subprocess.run(["bash", str(SCRIPTS / "demo.sh")], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result, checkpoints


@pytest.mark.slow
def test_demo_smoke_prints_the_sink_table_with_all_three_variants_and_writes_plots(tmp_path):
    result, checkpoints = run_demo(tmp_path)
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
