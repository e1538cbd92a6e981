"""Running the whole study: every arm and seed in a fixed numeric environment, then the write-up."""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Iterator

import torch

from lit_gpt.core.files import output_folder, write_atomic, write_json
from lit_gpt.studies.superposition.measure import (
    ablation_matrix,
    effective_tasks_per_head,
    gate_by_task,
    head_ablated,
    heads_per_task,
    last_logits,
    recorded_gates,
    served,
    task_losses,
    tasks_per_head,
)
from lit_gpt.studies.superposition.report import (
    describe_numerics,
    plot_assignment,
    plot_gates,
    plot_tasks_per_head,
    results_markdown,
)
from lit_gpt.studies.superposition.settings import ARMS, EVAL_SEED, KERNEL_VARIABLES, Study, StudyError
from lit_gpt.studies.superposition.tasks import Batch, SkipTrigrams, latin_rows
from lit_gpt.studies.superposition.train import analyse, init_model, summarise, train_model


@contextmanager
def fixed_threads(threads: int) -> Iterator[None]:
    """Torch's CPU thread count set to `threads` inside, the caller's count back afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def numerics() -> dict:
    """What, besides the settings and seeds, decides the numbers bit for bit: the torch build, the CPU kernel
    paths of torch and of MKL (the CPU's own unless `KERNEL_VARIABLES` lower them) and the thread count."""
    return {
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "kernel_variables": {name: os.environ[name] for name in KERNEL_VARIABLES if name in os.environ},
        "threads": torch.get_num_threads(),
    }


def train_and_analyse(study: Study, log=print) -> tuple[SkipTrigrams, list[dict], dict]:
    """Every arm for every seed with `study.threads` threads: train, then analyse on the shared evaluation
    set; one dict per model, and the `numerics` they were computed under."""
    data = study.dataset()
    eval_batch = data.every_pair(study.eval_repeats, torch.Generator().manual_seed(EVAL_SEED))
    runs = []
    with fixed_threads(study.threads):
        environment = numerics()
        for seed in range(study.seeds):
            for arm in study.arms:
                model, training = train_model(study, data, arm, seed, eval_batch)
                run = {"arm": arm, "seed": seed, **training, **analyse(model, study, data, arm, eval_batch)}
                runs.append(run)
                log(
                    f"{arm:>9} seed {seed}: {run['steps']:>5} steps, loss {run['loss']:.4f}, accuracy "
                    f"{run['accuracy']:.3f}, tasks per head {run['tasks_per_head']} "
                    f"({run['train_seconds']:.1f} s)"
                )
    return data, runs, environment


def run_study(study: Study, out: Path, log=print) -> dict:
    """Train and analyse every model, then write results.json (with the `numerics` to rerun it bit for bit
    under), results.md and the plots into `out` (checked to be writable first)."""
    out = output_folder(out)  # checked before any model is trained
    started = time.perf_counter()
    data, runs, environment = train_and_analyse(study, log)
    summary = summarise(runs, study.arms, study.threshold)
    seconds = time.perf_counter() - started
    result = {
        "study": asdict(study),
        "numerics": environment,
        "task_table": data.table.tolist(),
        "summary": summary,
        "runs": runs,
        "seconds": seconds,
    }
    markdown = results_markdown(study, summary, runs, seconds, environment)
    written = [
        write_json(out / "results.json", result),
        write_atomic(out / "results.md", markdown),
        plot_assignment(runs, study.arms, study.threshold, out / "assignment.png"),
        plot_tasks_per_head(runs, study.arms, out / "tasks_per_head.png"),
    ]
    if any(ARMS[arm][0] != "none" for arm in study.arms):
        written.append(plot_gates(runs, study.arms, out / "gates.png"))
    log("wrote " + ", ".join(str(path) for path in written))
    return result


__all__ = [
    "ARMS",
    "Batch",
    "KERNEL_VARIABLES",
    "SkipTrigrams",
    "Study",
    "StudyError",
    "ablation_matrix",
    "analyse",
    "describe_numerics",
    "effective_tasks_per_head",
    "fixed_threads",
    "gate_by_task",
    "head_ablated",
    "heads_per_task",
    "init_model",
    "last_logits",
    "latin_rows",
    "numerics",
    "plot_assignment",
    "plot_gates",
    "plot_tasks_per_head",
    "recorded_gates",
    "results_markdown",
    "run_study",
    "served",
    "summarise",
    "task_losses",
    "tasks_per_head",
    "train_and_analyse",
    "train_model",
]
