"""Attention-head superposition: OV-incoherent skip trigrams learned by a 1-layer attention-only GPT with
standard heads and with a per-head output gate, and which head serves which task.

The toy follows Anthropic's attention-head superposition updates (2023) and the gated attention blocks of
Mathwin, Akar and Sharkey (2024). A skip trigram `[source] ... [destination] -> [output]` is learned by a
head that attends from the destination to the source and copies an output through its OV circuit. Here
every task has its own destination token, all tasks share the same source tokens, and the tasks'
source -> output maps are rows of a Latin rectangle: any two tasks send every source to different
outputs. So no single OV map serves two tasks, and a head's OV circuit, which sees only the source, cannot
tell the tasks apart: with fewer heads than tasks the model must combine heads per task (superposition)
or route with its attention (attend elsewhere, to a sink, for the tasks a head does not serve). A
per-head output gate sigmoid(x W_g) (`attn_gate: headwise`) can switch a head off per destination
token instead, which should let heads specialise; an L1 penalty on the gates pushes them to.

Which head serves which task is measured causally: zero one head's output before the output projection
and record how much each task's loss rises (`ablation_matrix`). A head serves a task when that rise
exceeds a threshold; the participation ratio of the rises gives a threshold-free count.

Everything runs on the project's `GPT` (`n_layer: 1`, `mlp: none`, no position encoding: a skip trigram
does not depend on where the source is).

A model's result depends on its seed alone within one numeric environment (`numerics`: torch build, CPU
kernel path, thread count), whatever ran before it in the process; across environments the rounding
differs, and training amplifies it.
"""

from __future__ import annotations

import math
import os
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ContextManager, Iterator, Optional, cast

import torch
import torch.nn.functional as F

from lit_gpt.core.errors import UserError
from lit_gpt.core.files import output_folder, write_atomic, write_json
from lit_gpt.measurement.plots import plt, save_and_close
from lit_gpt.model.config import Config
from lit_gpt.model.gpt import GPT, Block

# Arm name -> (attn_gate, whether the gate L1 penalty applies).
ARMS: dict[str, tuple[str, bool]] = {
    "standard": ("none", False),
    "gated": ("headwise", False),
    "gated_l1": ("headwise", True),
}

EVAL_SEED = 1_000_003  # the evaluation sequences, the same for every arm and seed

# Environment variables that pick the CPU kernels, hence the rounding: read when torch and MKL load.
KERNEL_VARIABLES = ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "MKL_CBWR")


class StudyError(UserError):
    """Settings of the toy study that cannot be run or would not test what it claims."""


# ------------------------------------------------------------------------------------------------ data
@dataclass(frozen=True)
class Batch:
    """Sequences (N, T) whose last token is a task's destination; `target` is the token to predict there."""

    idx: torch.Tensor
    task: torch.Tensor
    source: torch.Tensor
    source_pos: torch.Tensor
    target: torch.Tensor


@dataclass(frozen=True)
class SkipTrigrams:
    """The dataset: filler tokens, one source token at a random earlier position, the destination last.

    Vocabulary, in this order: `n_filler` fillers, `n_sources` sources, one destination per task, and
    `n_sources` outputs. `table[t, s]` is the output (0-based among the outputs) of task t for source s.
    """

    n_tasks: int
    n_sources: int
    n_filler: int
    seq_len: int
    table: torch.Tensor

    @property
    def first_source(self) -> int:
        return self.n_filler

    @property
    def first_destination(self) -> int:
        return self.n_filler + self.n_sources

    @property
    def first_output(self) -> int:
        return self.first_destination + self.n_tasks

    @property
    def vocab_size(self) -> int:
        return self.first_output + self.n_sources

    def make(self, task: torch.Tensor, source: torch.Tensor, generator: torch.Generator) -> Batch:
        """One sequence per (task, source) pair given: random fillers and source position."""
        n = task.numel()
        idx = torch.randint(0, self.n_filler, (n, self.seq_len), generator=generator)
        source_pos = torch.randint(0, self.seq_len - 1, (n,), generator=generator)
        idx[torch.arange(n), source_pos] = self.first_source + source
        idx[:, -1] = self.first_destination + task
        target = self.first_output + self.table[task, source]
        return Batch(idx, task, source, source_pos, target)

    def sample(self, n: int, generator: torch.Generator) -> Batch:
        """`n` sequences with uniformly drawn tasks and sources."""
        task = torch.randint(0, self.n_tasks, (n,), generator=generator)
        source = torch.randint(0, self.n_sources, (n,), generator=generator)
        return self.make(task, source, generator)

    def every_pair(self, repeats: int, generator: torch.Generator) -> Batch:
        """Each (task, source) pair `repeats` times: an evaluation set balanced over tasks and sources."""
        task = torch.arange(self.n_tasks).repeat_interleave(self.n_sources * repeats)
        source = torch.arange(self.n_sources).repeat_interleave(repeats).repeat(self.n_tasks)
        return self.make(task, source, generator)


def latin_rows(n_rows: int, n: int, generator: torch.Generator) -> torch.Tensor:
    """(n_rows, n): each row a permutation of 0..n-1 and any two rows different in every column.

    Rows of the addition table of Z_n with rows, columns and symbols relabelled at random.
    """
    rows = torch.randperm(n, generator=generator)[:n_rows]
    columns = torch.randperm(n, generator=generator)
    symbols = torch.randperm(n, generator=generator)
    return symbols[(rows[:, None] + columns[None, :]) % n]


# ------------------------------------------------------------------------------------------ settings
@dataclass
class Study:
    """Attention-head superposition on OV-incoherent skip trigrams: standard vs gated heads."""

    n_tasks: int = 8
    """Skip-trigram tasks (one destination token each); more than `n_head` forces superposition."""
    n_sources: int = 8
    """Source tokens (= output tokens); at least `n_tasks`, so every two tasks disagree on every source."""
    n_filler: int = 32
    """Filler tokens around the source."""
    seq_len: int = 12
    """Tokens per sequence; the source is at one of the first seq_len - 1, the destination last."""
    n_head: int = 4
    """Attention heads of the single layer."""
    head_size: int = 8
    """Width of each head."""
    n_embd: int = 32
    """Width of the residual stream."""
    arms: list[str] = field(default_factory=lambda: list(ARMS))
    """Which models to train: `standard` (no gate), `gated` (attn_gate: headwise), `gated_l1` (with the penalty)."""
    gate_l1: float = 0.05
    """Weight of the penalty on the mean gate value at the destination, in the `gated_l1` arm."""
    seeds: int = 5
    """Seeds per arm (model init and training data; the task table stays the same)."""
    data_seed: int = 0
    """Seed of the task table."""
    steps: int = 3000
    """Most optimiser steps per model."""
    target_loss: Optional[float] = 0.001
    """Stop a model once its evaluation loss is at most this, so arms are compared at (nearly) equal
    loss; None trains every model for `steps`."""
    eval_every: int = 25
    """Steps between evaluations for `target_loss`."""
    batch_size: int = 256
    """Sequences per step, drawn fresh every step."""
    lr: float = 0.01
    """AdamW learning rate after warm-up (constant)."""
    warmup: int = 100
    """Steps of linear learning-rate warm-up."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    eval_repeats: int = 16
    """Evaluation sequences per (task, source) pair."""
    threshold: float = 0.1
    """A head serves a task when ablating it raises the task's loss by more than this (nats)."""
    threads: int = 1
    """Torch CPU threads (the model is tiny: more threads mostly add overhead). Part of the result: another
    count sums in another order, and the rounding grows into other step counts (see `numerics`)."""

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise `StudyError` naming the setting for sizes and combinations that cannot mean what they say."""
        positive = (
            "n_tasks",
            "n_sources",
            "n_filler",
            "n_head",
            "head_size",
            "n_embd",
            "seeds",
            "steps",
            "eval_every",
            "batch_size",
            "lr",
            "eval_repeats",
            "threshold",
            "threads",
        )
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise StudyError(f"--{name} must be a positive number, got {value!r}")
        for name in ("gate_l1", "warmup", "weight_decay"):
            if getattr(self, name) < 0:
                raise StudyError(f"--{name} must be >= 0, got {getattr(self, name)!r}")
        if self.target_loss is not None and not self.target_loss > 0:
            raise StudyError(
                f"--target_loss must be positive (or null to train every model for --steps), got {self.target_loss!r}"
            )
        if self.seq_len < 2:
            raise StudyError(f"--seq_len must be at least 2 (a source, then the destination), got {self.seq_len}")
        if self.n_head > self.n_tasks:
            raise StudyError(
                f"--n_head={self.n_head} is more than --n_tasks={self.n_tasks}: every task could have "
                f"a head of its own, so there is no superposition to study; use fewer heads or more tasks"
            )
        if self.n_sources < 2:
            raise StudyError(
                f"--n_sources must be at least 2: with one source every task's output is fixed by its "
                f"destination alone and no head is needed; got {self.n_sources}"
            )
        if self.n_sources < self.n_tasks:
            raise StudyError(
                f"--n_sources={self.n_sources} is less than --n_tasks={self.n_tasks}: every two tasks "
                f"must send every source to different outputs, which needs n_sources >= n_tasks"
            )
        unknown = [arm for arm in self.arms if arm not in ARMS]
        if unknown or not self.arms or len(set(self.arms)) < len(self.arms):
            raise StudyError(f"--arms must list distinct arms among {', '.join(ARMS)}, got {self.arms!r}")
        if "gated_l1" in self.arms and self.gate_l1 == 0:
            raise StudyError(
                "--arms has gated_l1 with --gate_l1 0, which is the gated arm again; "
                "give a positive --gate_l1 or drop gated_l1"
            )

    def dataset(self) -> SkipTrigrams:
        table = latin_rows(self.n_tasks, self.n_sources, torch.Generator().manual_seed(self.data_seed))
        return SkipTrigrams(self.n_tasks, self.n_sources, self.n_filler, self.seq_len, table)

    def model_config(self, data: SkipTrigrams, arm: str) -> Config:
        """A 1-layer attention-only GPT over the dataset's vocabulary; the arm decides the gate."""
        return Config(
            name=f"superposition_{arm}",
            block_size=data.seq_len,
            vocab_size=data.vocab_size,
            padding_multiple=1,
            n_layer=1,
            n_head=self.n_head,
            head_size=self.head_size,
            n_embd=self.n_embd,
            mlp="none",
            pos_embedding="nope",
            attn_gate=ARMS[arm][0],
        )


# ---------------------------------------------------------------------------------------- measuring
def last_logits(model: GPT, idx: torch.Tensor) -> torch.Tensor:
    """Logits at the destination (the last position), the only prediction the tasks define."""
    return model(idx)[:, -1]


def task_losses(model: GPT, batch: Batch, n_tasks: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, accuracy), each (n_tasks,): mean cross-entropy and argmax accuracy of each task's sequences."""
    with torch.no_grad():
        logits = last_logits(model, batch.idx)
    losses = F.cross_entropy(logits, batch.target, reduction="none")
    correct = (logits.argmax(-1) == batch.target).float()
    counts = torch.bincount(batch.task, minlength=n_tasks).clamp(min=1)
    per_task = lambda values: torch.zeros(n_tasks).index_add_(0, batch.task, values) / counts  # noqa: E731
    return per_task(losses), per_task(correct)


@contextmanager
def head_ablated(model: GPT, head: int, layer: int = 0) -> Iterator[GPT]:
    """The model with one head's output zeroed where the heads meet the output projection (after the gate)."""
    attn = cast(Block, model.blocks[layer]).attn
    if not 0 <= head < attn.config.n_head:
        raise StudyError(f"head {head} does not exist; the layer has {attn.config.n_head} heads")
    keep = torch.ones(attn.config.n_head, attn.config.head_size)
    keep[head] = 0
    keep = keep.flatten()

    def zero_head(module, args):
        return (args[0] * keep.to(args[0].dtype),)

    handle = attn.proj.register_forward_pre_hook(zero_head)
    try:
        yield model
    finally:
        handle.remove()


def ablation_matrix(model: GPT, batch: Batch, n_tasks: int, layer: int = 0) -> torch.Tensor:
    """(n_head, n_tasks): rise of each task's loss when one head is ablated, against the intact model."""
    clean, _ = task_losses(model, batch, n_tasks)
    rows = []
    for head in range(model.config.n_head):
        with head_ablated(model, head, layer):
            rows.append(task_losses(model, batch, n_tasks)[0] - clean)
    return torch.stack(rows)


def served(delta: torch.Tensor, threshold: float) -> torch.Tensor:
    """(n_head, n_tasks) bool: the head serves the task (its ablation costs more than `threshold`)."""
    return delta > threshold


def tasks_per_head(delta: torch.Tensor, threshold: float) -> torch.Tensor:
    """(n_head,): how many tasks each head serves."""
    return served(delta, threshold).sum(dim=1)


def heads_per_task(delta: torch.Tensor, threshold: float) -> torch.Tensor:
    """(n_tasks,): how many heads serve each task."""
    return served(delta, threshold).sum(dim=0)


def effective_tasks_per_head(delta: torch.Tensor) -> torch.Tensor:
    """(n_head,): participation ratio (sum d)^2 / sum d^2 of each head's loss rises d (negatives as 0).

    Threshold-free: k equal rises give k, a head that matters for one task gives about 1, a head that
    matters for none gives 0.
    """
    rises = delta.clamp(min=0)
    squares = rises.pow(2).sum(dim=1)
    return torch.where(squares > 0, rises.sum(dim=1).pow(2) / squares.clamp(min=torch.finfo(rises.dtype).tiny), 0.0)


@contextmanager
def recorded_gates(model: GPT, layer: int = 0) -> Iterator[list[torch.Tensor]]:
    """A list that receives each forward's gate values sigmoid(x W_g), (B, T, n_head), kept in the graph."""
    gate = cast(Block, model.blocks[layer]).attn.gate
    if gate is None or not gate.headwise:
        raise StudyError("the model has no per-head output gate (attn_gate: headwise)")
    values: list[torch.Tensor] = []
    handle = gate.proj.register_forward_hook(lambda module, args, out: values.append(torch.sigmoid(out)))
    try:
        yield values
    finally:
        handle.remove()


def gate_by_task(model: GPT, batch: Batch, n_tasks: int) -> torch.Tensor:
    """(n_head, n_tasks): mean gate value of each head at each task's destination."""
    with recorded_gates(model) as gates, torch.no_grad():
        model(batch.idx)
    at_destination = gates[0][:, -1]
    counts = torch.bincount(batch.task, minlength=n_tasks).clamp(min=1)
    return (torch.zeros(n_tasks, model.config.n_head).index_add_(0, batch.task, at_destination) / counts[:, None]).T


# ------------------------------------------------------------------------------------------ training
def init_model(config: Config, seed: int) -> GPT:
    """A model initialised from `seed` alone, leaving the caller's global RNG as it was (the init draws
    from the global generator, so a bare `torch.manual_seed` would reset everyone else's stream)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return GPT(config)


def train_model(study: Study, data: SkipTrigrams, arm: str, seed: int, eval_batch: Batch) -> tuple[GPT, dict]:
    """Train one model of `arm` from `seed`: AdamW on the destination's cross-entropy (plus the gate penalty in
    `gated_l1`), until the evaluation loss reaches `target_loss` or `steps` run out."""
    model = init_model(study.model_config(data, arm), seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=study.lr, weight_decay=study.weight_decay)
    generator = torch.Generator().manual_seed(seed)
    penalised = ARMS[arm][1]
    curve: list[tuple[int, float]] = []
    started = time.perf_counter()
    step = 0
    recording: ContextManager[list[torch.Tensor]] = recorded_gates(model) if penalised else nullcontext([])
    with recording as gates:
        while step < study.steps:
            for group in optimizer.param_groups:
                group["lr"] = study.lr * min(1.0, (step + 1) / max(study.warmup, 1))
            batch = data.sample(study.batch_size, generator)
            gates.clear()
            loss = F.cross_entropy(last_logits(model, batch.idx), batch.target)
            if penalised:
                loss = loss + study.gate_l1 * gates[0][:, -1].mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            if step % study.eval_every == 0 or step == study.steps:
                eval_loss = task_losses(model, eval_batch, data.n_tasks)[0].mean().item()
                curve.append((step, eval_loss))
                if study.target_loss is not None and eval_loss <= study.target_loss:
                    break
    return model, {
        "steps": step,
        "train_seconds": time.perf_counter() - started,
        "curve": curve,
        "reached_target": study.target_loss is not None and curve[-1][1] <= study.target_loss,
    }


def analyse(model: GPT, study: Study, data: SkipTrigrams, arm: str, eval_batch: Batch) -> dict:
    """Per-task loss and accuracy, the head-ablation matrix and the counts derived from it (and gate values)."""
    loss, accuracy = task_losses(model, eval_batch, data.n_tasks)
    delta = ablation_matrix(model, eval_batch, data.n_tasks)
    result = {
        "loss": loss.mean().item(),
        "accuracy": accuracy.mean().item(),
        "task_loss": loss.tolist(),
        "task_accuracy": accuracy.tolist(),
        "ablation": delta.tolist(),
        "tasks_per_head": tasks_per_head(delta, study.threshold).tolist(),
        "heads_per_task": heads_per_task(delta, study.threshold).tolist(),
        "effective_tasks_per_head": effective_tasks_per_head(delta).tolist(),
    }
    if ARMS[arm][0] != "none":
        result["gate"] = gate_by_task(model, eval_batch, data.n_tasks).tolist()
    return result


def _mean_std(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))


def sensitivity_thresholds(threshold: float) -> tuple[float, float, float]:
    """The threshold a tenth as large, itself, and ten times as large: how much the counts depend on it."""
    return threshold / 10, threshold, threshold * 10


def summarise(runs: list[dict], arms: list[str], threshold: float) -> dict[str, dict]:
    """Per arm, over seeds: mean and standard deviation of loss, accuracy, worst task's accuracy, tasks per
    head, heads per task, effective tasks per head, steps; per-task accuracy averaged over seeds; and the
    mean tasks per head at each of `sensitivity_thresholds`."""
    summary: dict[str, dict[str, Any]] = {}
    for arm in arms:
        mine = [run for run in runs if run["arm"] == arm]
        per_run = {
            "loss": [r["loss"] for r in mine],
            "accuracy": [r["accuracy"] for r in mine],
            "worst_task_accuracy": [min(r["task_accuracy"]) for r in mine],
            "tasks_per_head": [sum(r["tasks_per_head"]) / len(r["tasks_per_head"]) for r in mine],
            "heads_per_task": [sum(r["heads_per_task"]) / len(r["heads_per_task"]) for r in mine],
            "effective_tasks_per_head": [
                sum(r["effective_tasks_per_head"]) / len(r["effective_tasks_per_head"]) for r in mine
            ],
            "steps": [float(r["steps"]) for r in mine],
        }
        summary[arm] = {name: _mean_std(values) for name, values in per_run.items()}
        n_tasks = len(mine[0]["task_accuracy"])
        summary[arm]["task_accuracy"] = [sum(r["task_accuracy"][t] for r in mine) / len(mine) for t in range(n_tasks)]
        summary[arm]["tasks_per_head_at"] = {
            str(level): _mean_std(
                [tasks_per_head(torch.tensor(r["ablation"]), level).float().mean().item() for r in mine]
            )
            for level in sensitivity_thresholds(threshold)
        }
    return summary


# ---------------------------------------------------------------------------------------- reporting
def describe_numerics(environment: dict) -> str:
    """`numerics` in words, e.g. "torch 2.5.1, CPU kernels AVX512, 1 thread(s)"."""
    variables = " ".join(f"{name}={value}" for name, value in environment["kernel_variables"].items())
    kernels = environment["cpu_capability"] + (f" ({variables})" if variables else "")
    return f"torch {environment['torch']}, CPU kernels {kernels}, {environment['threads']} thread(s)"


def results_markdown(study: Study, summary: dict, runs: list[dict], seconds: float, environment: dict) -> str:
    """The measured tables: per arm (mean ± std over seeds), per task, per run; and the `numerics` behind them."""
    s = study
    target = (
        f"until the evaluation loss is <= {s.target_loss} (at most {s.steps} steps)"
        if s.target_loss
        else f"for {s.steps} steps"
    )
    lines = [
        "# Attention-head superposition: measured results",
        "",
        f"{s.n_tasks} OV-incoherent skip-trigram tasks, {s.n_sources} sources, {s.n_filler} fillers, sequences of "
        f"{s.seq_len}; 1 layer, {s.n_head} heads of size {s.head_size}, n_embd {s.n_embd}, no MLP. Each model "
        f"trained {target}, batch {s.batch_size}, AdamW lr {s.lr}, weight decay {s.weight_decay}; "
        f"gate L1 weight {s.gate_l1} in `gated_l1`. {s.seeds} seeds per arm; evaluation on "
        f"{s.eval_repeats} sequences per (task, source) pair. A head serves a task when ablating it raises "
        f"the task's loss by more than {s.threshold} nats. Total time {seconds:.0f} s; "
        f"{describe_numerics(environment)} (the numbers are bit for bit those of this environment only).",
        "",
        "| arm | loss | accuracy | worst task acc. | tasks per head | heads per task | effective tasks per head "
        "| steps |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for arm, row in summary.items():
        cells = [f"{row['loss'][0]:.4f} ± {row['loss'][1]:.4f}"]
        cells += [f"{row[k][0]:.3f} ± {row[k][1]:.3f}" for k in ("accuracy", "worst_task_accuracy")]
        cells += [
            f"{row[k][0]:.2f} ± {row[k][1]:.2f}"
            for k in ("tasks_per_head", "heads_per_task", "effective_tasks_per_head")
        ]
        cells.append(f"{row['steps'][0]:.0f} ± {row['steps'][1]:.0f}")
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    n_tasks = len(next(iter(summary.values()))["task_accuracy"])
    lines += [
        "",
        "Accuracy per task (mean over seeds):",
        "",
        "| arm | " + " | ".join(f"task {t}" for t in range(n_tasks)) + " |",
        "|---|" + "---|" * n_tasks,
    ]
    for arm, row in summary.items():
        lines.append(f"| {arm} | " + " | ".join(f"{a:.3f}" for a in row["task_accuracy"]) + " |")
    levels = sensitivity_thresholds(s.threshold)
    lines += [
        "",
        "Tasks per head when a head serves a task at other thresholds (nats; mean ± std over seeds):",
        "",
        "| arm | " + " | ".join(f"> {level:g}" for level in levels) + " |",
        "|---|" + "---|" * len(levels),
    ]
    for arm, row in summary.items():
        lines.append(
            f"| {arm} | "
            + " | ".join(
                f"{row['tasks_per_head_at'][str(level)][0]:.2f} ± {row['tasks_per_head_at'][str(level)][1]:.2f}"
                for level in levels
            )
            + " |"
        )
    lines += [
        "",
        "Per run (tasks served by each head):",
        "",
        "| arm | seed | steps | loss | accuracy | tasks per head | effective tasks per head |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        effective = ", ".join(f"{e:.1f}" for e in run["effective_tasks_per_head"])
        missed = s.target_loss is not None and not run["reached_target"]
        lines.append(
            f"| {run['arm']} | {run['seed']} | {run['steps']}{'*' if missed else ''} | "
            f"{run['loss']:.4f} | {run['accuracy']:.3f} | {run['tasks_per_head']} | [{effective}] |"
        )
    if not all(run["reached_target"] for run in runs) and s.target_loss is not None:
        lines += ["", f"\\* did not reach the target loss {s.target_loss} within {s.steps} steps."]
    lines += ["", "![task-to-head assignment](assignment.png)", "", "![tasks per head](tasks_per_head.png)"]
    if any("gate" in run for run in runs):
        lines += ["", "![gate values](gates.png)"]
    return "\n".join(lines) + "\n"


def plot_assignment(runs: list[dict], arms: list[str], threshold: float, path: Path) -> Path:
    """Loss rise of each task (columns) when each head (rows) is ablated, one panel per arm and seed; a dot
    marks a served pair. Tasks are ordered by the head that matters most for them."""
    seeds = sorted({run["seed"] for run in runs})
    vmax = max(max(max(row) for row in run["ablation"]) for run in runs)
    fig, axes = plt.subplots(
        len(arms),
        len(seeds),
        figsize=(2.9 * len(seeds) + 0.8, 1.9 * len(arms) + 0.4),
        squeeze=False,
        layout="constrained",
    )
    for row, arm in enumerate(arms):
        for col, seed in enumerate(seeds):
            run = next(r for r in runs if r["arm"] == arm and r["seed"] == seed)
            delta = torch.tensor(run["ablation"])
            order = sorted(range(delta.shape[1]), key=lambda t: (int(delta[:, t].argmax()), -float(delta[:, t].max())))
            delta = delta[:, order]
            ax = axes[row][col]
            image = ax.imshow(
                delta.clamp(min=0).numpy(), cmap="magma", vmin=0, vmax=vmax, aspect="auto", interpolation="nearest"
            )
            heads, tasks = torch.nonzero(served(delta, threshold), as_tuple=True)
            ax.scatter(tasks.numpy(), heads.numpy(), s=9, color="tab:cyan")
            ax.set_xticks(range(len(order)), [str(t) for t in order], fontsize=7)
            ax.set_yticks(range(delta.shape[0]), [str(h) for h in range(delta.shape[0])], fontsize=7)
            ax.set_title(
                f"{arm}, seed {seed}: {sum(run['tasks_per_head']) / delta.shape[0]:.2f} tasks/head", fontsize=8
            )
            if col == 0:
                ax.set_ylabel("head ablated", fontsize=8)
            if row == len(arms) - 1:
                ax.set_xlabel("task", fontsize=8)
    fig.colorbar(image, ax=axes, shrink=0.8, label="loss rise (nats)")
    return save_and_close(fig, path, tight=False)


def plot_tasks_per_head(runs: list[dict], arms: list[str], path: Path) -> Path:
    """Tasks served by each head (every head of every seed a dot, the mean a bar) and the loss of each run."""
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(11, 3.3), layout="constrained")
    for x, arm in enumerate(arms):
        mine = [run for run in runs if run["arm"] == arm]
        counts = [c for run in mine for c in run["tasks_per_head"]]
        effective = [e for run in mine for e in run["effective_tasks_per_head"]]
        jitter = [x + 0.25 * ((i % 7) / 6 - 0.5) for i in range(len(counts))]
        for ax, values in ((left, counts), (middle, effective)):
            ax.bar(x, sum(values) / len(values), color="0.85", width=0.6)
            ax.scatter(jitter, values, s=10, color=f"C{x}")
        right.scatter([x] * len(mine), [run["loss"] for run in mine], color=f"C{x}")
    for ax, label in (
        (left, "tasks served per head"),
        (middle, "effective tasks per head"),
        (right, "evaluation loss (nats)"),
    ):
        ax.set_xticks(range(len(arms)), arms)
        ax.set_ylabel(label)
    right.set_yscale("log")
    return save_and_close(fig, path, tight=False)


def plot_gates(runs: list[dict], arms: list[str], path: Path) -> Path:
    """Mean gate value of each head at each task's destination, for the gated arms' first seed."""
    gated = [arm for arm in arms if ARMS[arm][0] != "none"]
    seed = min(run["seed"] for run in runs)
    fig, axes = plt.subplots(1, len(gated), figsize=(3.6 * len(gated) + 0.8, 2.4), squeeze=False, layout="constrained")
    for ax, arm in zip(axes[0], gated):
        run = next(r for r in runs if r["arm"] == arm and r["seed"] == seed)
        image = ax.imshow(
            torch.tensor(run["gate"]).numpy(), cmap="viridis", vmin=0, vmax=1, aspect="auto", interpolation="nearest"
        )
        ax.set_title(f"{arm}, seed {seed}", fontsize=9)
        ax.set_xlabel("task", fontsize=8)
        ax.set_ylabel("head", fontsize=8)
    fig.colorbar(image, ax=axes, shrink=0.8, label="gate value")
    return save_and_close(fig, path, tight=False)


# ------------------------------------------------------------------------------------------------ run
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
