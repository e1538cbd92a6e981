"""Training one model of an arm and seed, its analysis, and the summary over seeds."""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from typing import Any, ContextManager

import torch
import torch.nn.functional as F

from lit_gpt.model.config import Config
from lit_gpt.model.gpt import GPT
from lit_gpt.studies.superposition.measure import (
    ablation_matrix,
    effective_tasks_per_head,
    gate_by_task,
    heads_per_task,
    last_logits,
    recorded_gates,
    task_losses,
    tasks_per_head,
)
from lit_gpt.studies.superposition.settings import ARMS, Study
from lit_gpt.studies.superposition.tasks import Batch, SkipTrigrams


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
