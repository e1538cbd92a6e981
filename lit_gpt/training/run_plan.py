"""A run's arguments as the trainer uses them: checked once and built into typed groups.

`TrainArgs` stays the flat surface, because the flags, the run YAMLs (upstream's keys among them) and the
`train` dict of every checkpoint are flat. `resolve(args)` checks them and returns a `RunPlan`: the
model as a `Config`, the attention runtime, and one group per concern (data, probe, optimisation,
running, logging) holding built objects (an `InputTransforms`, a probe tokenizer path, the ignored
predictions of the loss rule), so the trainer neither rebuilds the model from a dict nor reads flags by
name.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, TypeVar, Union

from lit_gpt.data.transforms import InputTransforms
from lit_gpt.measurement.loss import ignored_predictions
from lit_gpt.model.attention.runtime import AttentionRuntime
from lit_gpt.model.config import Config
from lit_gpt.training.train_args import TrainArgs

Group = TypeVar("Group")


@dataclass(frozen=True)
class DataArgs:
    """Where the tokens come from and how every window is edited before the model sees it."""

    train_dir: Path
    val_dir: Path
    """The validation shards' folder: `val_data_dir`, or the train folder when that is empty."""
    train_mixture: dict[str, float]
    """Domain prefix -> weight; empty = every train dataset weighted by its size."""
    valid_domains: tuple[str, ...]
    """Validation domains; empty = every `valid_*` dataset of `val_dir`."""
    downsample_ratio: float
    transforms: InputTransforms
    """The fixed token and random-token span of the run, for the loaders and the probe alike."""
    ignored_predictions: int
    """Predictions at the start of each sequence left out of the loss (`ignore_loss`, and a prefix LM's
    prefix), as `lit_gpt.measurement.loss.ignored_predictions` counts them for this model."""


@dataclass(frozen=True)
class ProbeArgs:
    """The sink metric measured at every evaluation."""

    enabled: bool
    file: Optional[Path]
    tokenizer: Path
    """`tokenizer`, or the train folder (its `tokenizer.json`) when that is empty."""
    eps: float
    k: int


@dataclass(frozen=True)
class OptimArgs:
    """Batches, the learning-rate schedule and AdamW."""

    global_batch_size: int
    micro_batch_size: int
    max_step: int
    learning_rate: float
    min_lr: float
    decay_lr: bool
    warmup_steps: int
    cooldown_steps: int
    weight_decay: float
    betas: tuple[float, float]
    decay_norms_and_biases: bool
    grad_clip: float


@dataclass(frozen=True)
class RunArgs:
    """Where and how the run executes: seed, devices, intervals, checkpoints."""

    seed: int
    devices: Union[int, str]
    num_nodes: int
    strategy: str
    precision: Optional[str]
    """A Fabric precision, or None for the device's default (chosen where Fabric starts)."""
    compile: bool
    activation_checkpointing: bool
    peak_flops: Optional[float]
    eval_step_interval: int
    eval_iters: int
    save_step_interval: int
    keep_last: int
    out_name: str
    checkpoint_root: Path
    resume: Union[bool, str]

    @property
    def out_dir(self) -> Path:
        return self.checkpoint_root / self.out_name


@dataclass(frozen=True)
class LogArgs:
    """What the run reports while it trains."""

    logger: str
    progress_bar: bool
    step_interval: int


@dataclass(frozen=True)
class RunPlan:
    """A checked run: what the trainer, the loaders and the checkpoints take."""

    model: Config
    attention: AttentionRuntime
    data: DataArgs
    probe: ProbeArgs
    optim: OptimArgs
    run: RunArgs
    log: LogArgs
    arguments: dict[str, Any]
    """The flat arguments (`TrainArgs.to_dict()`): saved under `train` in every checkpoint and logged as the
    run's hyperparameters, so older readers and upstream's key names keep working."""

    @property
    def out_dir(self) -> Path:
        return self.run.out_dir

    @classmethod
    def of(cls, args: TrainArgs, model: Config, attention: AttentionRuntime) -> "RunPlan":
        """The groups of `args` (already checked), around the model and attention runtime built from it."""
        return cls(
            model=model,
            attention=attention,
            data=DataArgs(
                train_dir=Path(args.train_data_dir),
                val_dir=Path(args.val_data_dir or args.train_data_dir),
                train_mixture=dict(args.train),
                valid_domains=tuple(args.valid),
                downsample_ratio=args.downsample_ratio,
                transforms=transforms_of(args),
                ignored_predictions=ignored_predictions(model, args.ignore_loss),
            ),
            probe=ProbeArgs(
                enabled=args.eval_sink,
                file=args.probe_file,
                tokenizer=Path(args.tokenizer or args.train_data_dir),
                eps=args.sink_eps,
                k=args.sink_k,
            ),
            optim=same_named(args, OptimArgs, betas=(args.beta1, args.beta2)),
            run=same_named(args, RunArgs, checkpoint_root=Path(args.checkpoint_root)),
            log=LogArgs(logger=args.logger, progress_bar=args.progress_bar, step_interval=args.log_step_interval),
            arguments=copy.deepcopy(args.to_dict()),
        )


def same_named(args: TrainArgs, group: type[Group], **others: Any) -> Group:
    """A `group` whose fields are the flags of the same name, and `others` for those that are built."""
    names = {item.name for item in dataclasses.fields(group)} - others.keys()  # type: ignore[arg-type]
    return group(**{name: getattr(args, name) for name in names}, **others)


def resolve(args: TrainArgs) -> RunPlan:
    """Check `args` (every rule of `TrainArgs.validate`) and build its plan; the model is built once."""
    return RunPlan.of(args, args.checked_model(), args.attention_runtime())


def transforms_of(args: TrainArgs) -> InputTransforms:
    """The run's input edits, from its typed fields (`InputTransforms.of_run` reads the saved dict of older
    checkpoints)."""
    fixed = None if args.fixed_token_pos is None else (args.fixed_token_pos, args.fixed_token_id)
    span = None
    if args.random_token_start is not None and args.random_token_end is not None:
        span = (args.random_token_start, args.random_token_end)
    return InputTransforms(fixed_token=fixed, random_token_range=span)


__all__ = [
    "DataArgs",
    "LogArgs",
    "OptimArgs",
    "ProbeArgs",
    "RunArgs",
    "RunPlan",
    "resolve",
    "same_named",
    "transforms_of",
]
