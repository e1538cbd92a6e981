"""scripts/gpu_check.sh: its CPU rehearsal (`--dry-run`) runs every check end to end, as the GPU run would,
so the prepared check cannot rot between GPU runs -- and it runs without jsonargparse, litdata and wandb, which
the GPU machine lacks. Timings are the check's own business, never asserted here."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from script_modules import load_script

# Not imported from test_scripts: the rehearsal collects this module too, where litdata is missing.
REPO = Path(__file__).resolve().parents[1]

EXPECTED_CHECKS = [
    "kernels",
    "throughput softmax",
    "throughput sigmoid, no norm",
    "throughput KV-bias",
    "throughput sink logit",
    "goal softmax MFU",
    "goal sigmoid speed",
    "big step",
    "resume",
]


def packages_that_fail_to_import(folder, names):
    """A folder that, first on PYTHONPATH, makes `import <name>` raise ImportError, as on a machine without them."""
    for name in names:
        (folder / name).mkdir(parents=True)
        (folder / name / "__init__.py").write_text(f"raise ImportError('{name} is not installed here')\n")
    return folder


@pytest.mark.slow
def test_the_cpu_rehearsal_runs_every_check_without_the_packages_the_gpu_machine_lacks(tmp_path):
    missing = packages_that_fail_to_import(tmp_path / "missing", ("jsonargparse", "litdata", "wandb"))
    out_dir = tmp_path / "out"
    env = dict(os.environ, PYTHON=sys.executable, PYTHONPATH=str(missing))
    done = subprocess.run(
        ["bash", "scripts/gpu_check.sh", "--dry-run", "--out_dir", str(out_dir)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((out_dir / "gpu_check.json").read_text())
    verdicts = {check["check"]: check["verdict"] for check in report["checks"]}
    assert list(verdicts) == EXPECTED_CHECKS
    assert all(verdict in ("pass", "not judged") for verdict in verdicts.values()), verdicts
    assert report["dry_run"] and len(report["throughput"]) == 5
    verdict_lines = [line for line in done.stdout.splitlines() if line.split(" ")[0] in ("PASS", "NOT")]
    assert len(verdict_lines) == len(EXPECTED_CHECKS)
    table = (out_dir / "gpu_check.md").read_text()
    assert all(f"| {name} |" in table for name in EXPECTED_CHECKS)


def refusal(argv, capsys) -> tuple[int, str]:
    """(exit status, stderr) of the check's command line refusing `argv`."""
    check = load_script(REPO / "bench" / "gpu_check.py", "bench_gpu_check")
    with pytest.raises(SystemExit) as stop:
        check.run_cli(lambda: check.main(argv))
    return stop.value.code, capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_without_a_gpu_the_check_says_so_in_one_line(capsys, tmp_path):
    status, error = refusal(["--out_dir", str(tmp_path)], capsys)
    assert status == 1 and error.count("\n") == 1
    assert error.startswith("error: no CUDA GPU here") and "--dry-run" in error
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("argv, culprit", [(["--dry-run", "--bogus"], "--bogus"), (["--only", "kernel"], "'kernel'")])
def test_a_mistyped_flag_is_refused_in_one_line(capsys, argv, culprit):
    status, error = refusal(argv, capsys)
    assert status == 2 and error.count("\n") == 1 and error.startswith("error: ") and culprit in error
