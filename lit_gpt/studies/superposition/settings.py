"""The study's settings (`Study`), its arms and the error it raises for settings it cannot run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch

from lit_gpt.core.errors import UserError
from lit_gpt.model.config import Config
from lit_gpt.studies.superposition.tasks import SkipTrigrams, latin_rows

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
