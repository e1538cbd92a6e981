"""Which head serves which task, measured causally (one head's output zeroed, each task's loss rise), and the
gate values per task."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, cast

import torch
import torch.nn.functional as F

from lit_gpt.model.gpt import GPT, Block
from lit_gpt.studies.superposition.settings import StudyError
from lit_gpt.studies.superposition.tasks import Batch


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
