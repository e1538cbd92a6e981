"""The study's write-up: the results table in Markdown and its figures."""

from __future__ import annotations

from pathlib import Path

import torch

from lit_gpt.measurement.plots import plt, save_and_close
from lit_gpt.studies.superposition.measure import served
from lit_gpt.studies.superposition.settings import ARMS, Study
from lit_gpt.studies.superposition.train import sensitivity_thresholds


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
