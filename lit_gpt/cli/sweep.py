"""Helpers of the sweep scripts (scripts/lib.sh); see `lit_gpt.reporting.sweeps`.

python scripts/sweep.py compose --yaml configs/lr/tinyllama_60m_lr1e-3.yaml --scale cpu --out run.yaml
python scripts/sweep.py data --scale cpu --build true
python scripts/sweep.py latest --run_dir checkpoints/tinyllama_60M_lr1e-3
python scripts/sweep.py fill --doc scripts/optimization.md --key "lr cpu" --table checkpoints/lr_cpu_report/report.md
python scripts/sweep.py peak
python scripts/sweep.py eta --log checkpoints/demo_progress.log --runs 3 --peak_flops 1.8e11 --share 0.33 --parent $$
"""

import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Optional

from jsonargparse import CLI

from lit_gpt.core.errors import run_cli
from lit_gpt.core.files import read_text
from lit_gpt.data.errors import DataError
from lit_gpt.reporting.sweeps import (
    data_dir,
    data_options,
    demo_eta,
    fill_results,
    follow,
    load_composed,
    missing_data,
    preprocess_command,
    stand_in_plan,
    step_rates,
)


def compose(
    yaml: Path,
    out: Path,
    scale: str = "paper",
    data: Optional[Path] = None,
    probe_file: Optional[Path] = None,
    peak_flops: Optional[float] = None,
    max_step: Optional[int] = None,
) -> None:
    """Write the run YAML of `config` at `scale` to `out`, after the trainer's own checks and a data check;
    at a scale other than `paper`, say what the run trains instead of the paper's and about how long.

    Args:
        yaml: A YAML of configs/.
        out: Where the composed run YAML goes.
        scale: `paper` or a folder of configs/ holding base.yaml (e.g. `cpu`).
        data: Folder of the training/validation shards (default: the scale's usual folder).
        probe_file: Probe set for the sink metric (default: the run's).
        peak_flops: FLOP/s the time estimate assumes (default: this machine's fp32 matmul peak, measured).
        max_step: Steps the trainer is told to stop after (a smoke run's MAX_STEPS), for the time estimate.
    """
    folder = data or data_dir(scale)
    overrides = {"train_data_dir": str(folder), "val_data_dir": str(folder)}
    if probe_file is not None:
        overrides["probe_file"] = str(probe_file)
    args = load_composed(yaml, scale, out=out, overrides=overrides)
    problem = missing_data(
        args.train_data_dir, args.probe_file if args.eval_sink else None, args.model_config().vocab_size
    )
    if problem:
        raise DataError(f"{problem}; build the data with `{preprocess_command(scale, folder)}`")
    if scale != "paper":
        from lit_gpt.training.loggers import measure_matmul_flops

        planned = replace(args, max_step=max_step) if max_step else args
        print(
            stand_in_plan(yaml, scale, planned, load_composed(yaml), peak_flops or measure_matmul_flops()), flush=True
        )


def data(
    scale: str = "paper",
    folder: Optional[Path] = None,
    probe_file: Path = Path("datasets/probe_valid.jsonl"),
    build: bool = False,
) -> None:
    """Check that the data of `scale` is there; with `build`, build it when it is not (offline corpora only).

    Args:
        scale: `paper` or a folder of configs/ holding base.yaml.
        folder: Data folder (default: the scale's usual folder).
        probe_file: Probe set for the sink metric, written by the same preprocessing.
        build: Build missing data (not for `paper`, whose data comes from the hub).
    """
    folder = folder or data_dir(scale)
    options = data_options(scale)
    problem = missing_data(folder, probe_file, options.get("vocab_size"))
    if problem is None:
        return
    command = preprocess_command(scale, folder)
    if not build or options["source"] == "hub":
        raise DataError(f"{problem}; build the data with `{command}`")
    from lit_gpt.data.prepare import prepare

    print(f"{problem}: running `{command}`", flush=True)
    prepare(output_dir=folder, probe_path=probe_file, **options)


def latest(run_dir: Path) -> None:
    """Print the newest complete checkpoint of a run folder."""
    from lit_gpt.training.checkpoint import find_latest

    path = find_latest(run_dir)
    if path is None:
        raise DataError(f"{run_dir} holds no checkpoint; did the training run fail?")
    print(path)


def fill(doc: Path, key: str, table: Path) -> None:
    """Put the Markdown table in file `table` into the results block `key` of `doc`."""
    if not fill_results(doc, key, read_text(table, "--table")):
        print(f"{doc} has no results block '{key}'; left unchanged", file=sys.stderr)


def peak(seconds: float = 3.0) -> None:
    """Print this machine's fp32 matmul peak in FLOP/s, measured over `seconds` with every core."""
    from lit_gpt.training.loggers import measure_matmul_flops

    print(f"{measure_matmul_flops(seconds=seconds):.4g}")


def eta(
    log: Path,
    runs: int,
    peak_flops: float,
    share: float,
    parent: int,
    after_training: float = 60.0,
    stop_line: str = "[demo] training done",
) -> None:
    """Follow the demo's prefixed training lines in `log` and print its ETA once each of the `runs` runs has
    timed its first logged steps; stop without one at `stop_line` (runs too short to time), or once the
    demo has ended (stopped before its stop line): the follower never outlives the demo.

    Args:
        log: File the runs' `[name] ...` lines are appended to.
        runs: How many runs train at once.
        peak_flops: The machine's fp32 matmul peak (FLOP/s), measured before the runs started.
        share: The share of that peak each run's MFU is measured against.
        parent: Process id of the demo that started this follower (its `$$`).
        after_training: Seconds the evaluation and the table take once training is over.
        stop_line: The line the demo appends once its runs have ended.
    """
    for timed in step_rates(follow(log, stop_line, alive=lambda: os.getppid() == parent)):
        if len(timed) == runs:
            print(demo_eta(timed, time.time(), after_training, peak_flops, share), flush=True)
            return


def main(argv: Optional[list[str]] = None) -> None:
    """Console entry point: `compose`, `data`, `latest`, `fill`, `peak` or `eta` with its flags."""
    run_cli(lambda: CLI([compose, data, latest, fill, peak, eta], as_positional=False, exit_on_error=False, args=argv))
