"""Wall time of a smoke run of a sweep script, from its start to its end, as a user types it:

    MAX_STEPS=5 bash scripts/run_default.sh

at the cpu scale (the tiny stand-in on the embedded corpus, built first if missing, untimed), into a
temporary CHECKPOINT_ROOT. MAX_STEPS makes a run a smoke run (no torch.compile, one evaluation batch; see
scripts/lib.sh), so its training should end well under a minute after start-up. Each row splits one run by the
lines it prints: start-up (the shell, the composed run YAML, up to the stand-in plan), the trainer up to
its last step line (torch import, model, data, evaluation at step 0, the steps, the checkpoint), and the
sink evaluation and report after it.

    python bench/smoke.py                          # MAX_STEPS=5 bash scripts/run_default.sh
    python bench/smoke.py --steps 1 5 --repeats 2
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lit_gpt.training.loggers import measure_matmul_flops

REPO = Path(__file__).resolve().parents[1]
SCRIPT = "scripts/run_default.sh"
# The lines that close the first two phases of a run: the stand-in plan, the trainer's last step line.
PLAN = " is a stand-in for "
STEP_LINE = "step "


def build_data() -> None:
    subprocess.run(
        [sys.executable, "scripts/sweep.py", "data", "--scale", "cpu", "--build", "true"], cwd=REPO, check=True
    )


def timed_run(steps: int, root: Path) -> dict[str, float]:
    """Seconds of each phase of one `MAX_STEPS=steps bash scripts/run_default.sh`, from the lines' arrival."""
    env = {
        **os.environ,
        "SCALE": "cpu",
        "MAX_STEPS": str(steps),
        "CHECKPOINT_ROOT": str(root),
        "PYTHON": sys.executable,
        "TRAIN_ARGS": "--progress_bar false",
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
    }
    started = time.perf_counter()
    arrivals: dict[str, float] = {}
    with subprocess.Popen(
        ["bash", SCRIPT], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as run:
        output = []
        for line in run.stdout:
            output.append(line)
            if PLAN in line:
                arrivals.setdefault("plan", time.perf_counter() - started)
            if line.startswith(STEP_LINE):
                arrivals["last step"] = time.perf_counter() - started
    total = time.perf_counter() - started
    if run.returncode != 0:
        sys.exit(f"error: `MAX_STEPS={steps} bash {SCRIPT}` failed (exit {run.returncode}):\n{''.join(output[-20:])}")
    return {
        "start-up": arrivals["plan"],
        "training": arrivals["last step"] - arrivals["plan"],
        "evaluation + report": total - arrivals["last step"],
        "total": total,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, nargs="+", default=[5], help="MAX_STEPS of each row")
    parser.add_argument("--repeats", type=int, default=1, help="runs per MAX_STEPS value")
    args = parser.parse_args()
    build_data()
    peak = measure_matmul_flops(seconds=3.0)
    print(
        f"\n`MAX_STEPS=N bash {SCRIPT}`, wall seconds; fp32 matmul peak {peak / 1e9:.0f} GFLOP/s on "
        f"{os.cpu_count()} core(s)\n"
    )
    print("| MAX_STEPS | start-up | trainer to its last step | evaluation + report | total |")
    print("|---|---|---|---|---|")
    for steps in args.steps:
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as root:
                phases = timed_run(steps, Path(root))
            print(
                f"| {steps} | {phases['start-up']:.1f} | {phases['training']:.1f} | "
                f"{phases['evaluation + report']:.1f} | {phases['total']:.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
