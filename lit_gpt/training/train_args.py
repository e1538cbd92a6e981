"""Arguments of a pretraining run: one dataclass whose fields are the run's flags and YAML keys.

Reading them from YAML files and the command line is `lit_gpt.training.run_config`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from lit_gpt.core.errors import UserError
from lit_gpt.measurement.probe_defaults import SINK_EPS, SINK_K
from lit_gpt.model.config import Config

# The input transforms, attention runtime and loss masks are imported where used: reading arguments must not
# import torch, so that `--help` and a refused flag answer at once.

STRATEGIES = ("auto", "ddp", "fsdp")
LOGGERS = ("wandb", "tensorboard", "csv", "none")
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true", "transformer-engine")
# What Lightning's ModelParallelStrategy, which runs FSDP2, accepts (bf16-mixed runs under autocast, as in DDP).
FSDP_PRECISIONS = ("32-true", "bf16-mixed", "bf16-true", "16-true")
# Integers feed numpy and torch as int64; the seed feeds numpy's and Lightning's seeding, which take 32 bits
# (Lightning replaces a larger seed by a random one with only a warning: a run that cannot be repeated).
INT64_MAX = 2**63 - 1
SEED_MAX = 2**32 - 1
POSITIVE_INTS = (
    "global_batch_size",
    "micro_batch_size",
    "max_step",
    "eval_step_interval",
    "save_step_interval",
    "log_step_interval",
    "eval_iters",
    "num_nodes",
    "sink_k",
)
NON_NEGATIVE_INTS = ("warmup_steps", "cooldown_steps", "keep_last", "ignore_loss")
INT_RANGES = {
    **dict.fromkeys(POSITIVE_INTS, (1, INT64_MAX)),
    **dict.fromkeys(NON_NEGATIVE_INTS, (0, INT64_MAX)),
    "seed": (0, SEED_MAX),
}
NON_NEGATIVE_FLOATS = ("min_lr", "weight_decay", "grad_clip")


def number_problem(name: str, value: Any) -> Optional[str]:
    """Why the value of field `name` cannot be used, or None: NaN and infinities (YAML `.nan`, `.inf`, flags
    `nan`, `inf`), which pass every `<` check and would surface steps later inside the optimizer or numpy,
    and integers beyond what consumes them. A mapping's entries are named `train.code`, `model.rope_base`."""
    if isinstance(value, dict):
        return next(filter(None, (number_problem(f"{name}.{key}", entry) for key, entry in value.items())), None)
    if isinstance(value, float) and not math.isfinite(value):
        return f"{name} is {value}, not a finite number; give a finite value"
    if isinstance(value, int) and not isinstance(value, bool):
        low, high = INT_RANGES.get(name, (-INT64_MAX - 1, INT64_MAX))
        if not low <= value <= high:
            kind = {1: "positive", 0: ">= 0"}.get(low, "a 64-bit integer")
            return f"{name} must be {kind}, got {value}; the range is {low}..{high}"
    return None


class ArgsError(UserError, ValueError):
    """A run configuration that cannot be used; the message names the key and how to fix it. Exit status 2,
    as for any flag or YAML value, also when found at setup (a batch that does not divide over the devices)."""

    exit_status = 2


@dataclass
class TrainArgs:
    """Pretraining run (upstream `pretrain/tinyllama.py`).

    Every field is a command-line flag and a key of the run YAML.
    """

    model_name: str = "tinyllama_60M"
    """Model preset from `lit_gpt.model.config.PRESETS` (upstream names accepted)."""
    model: dict[str, Any] = field(default_factory=dict)
    """Overrides of preset fields (attention variant, shape): `--model.<field> value`."""
    attn_backend: str = "auto"
    """Attention kernel: `auto | eager | sdpa | flex | flash | xformers`; auto never changes what is computed.
    Not part of the model, so a run can resume with another one (`--model.attn_backend` is an alias)."""
    attn_chunk_size: int = 0
    """Queries per chunk in the eager backend (bounds memory); 0 = automatic. Alias `--model.attn_chunk_size`."""

    train_data_dir: Path = Path("datasets/embedded")
    """Folder with the tokenized `train_<domain>` shards."""
    val_data_dir: Optional[Path] = None
    """Folder with the `valid_<domain>` shards; the train folder when empty."""
    data_yaml_file: Optional[Path] = None
    """Run YAML (upstream's mixture file, extended with any key of this list); `--config` is an alias."""
    train: dict[str, float] = field(default_factory=dict)
    """Train mixture: domain prefix -> weight. Empty = every `train_*` folder, weighted by size."""
    valid: dict[str, float] = field(default_factory=dict)
    """Validation domains (weights unused; each is evaluated separately). Empty = every `valid_*` folder."""
    tokenizer: Optional[Path] = None
    """Tokenizer for the probe set; `<train_data_dir>/tokenizer.json` when empty."""
    downsample_ratio: float = 1.0
    """Fraction of the training data to use (the data-amount experiment)."""
    ignore_loss: int = 0
    """Exclude the first N predictions of each sequence from the loss; a prefix LM always excludes at least
    its first `prefix_tokens - 1` (they read the answer inside the bidirectional prefix)."""
    fixed_token_pos: Optional[int] = None
    """Replace the token at this position of every sequence by `fixed_token_id`."""
    fixed_token_id: int = 1
    """Token id written at `fixed_token_pos`."""
    random_token_start: Optional[int] = None
    """First position of a span [start, end) filled with random tokens."""
    random_token_end: Optional[int] = None
    """End (exclusive) of the random-token span."""
    probe_file: Optional[Path] = Path("datasets/probe_valid.jsonl")
    """Held-out texts for the sink metric (64-token windows)."""
    eval_sink: bool = True
    """Measure Sink_1..Sink_k (and Sink* with key slots) on the probe set at every evaluation."""
    sink_eps: float = SINK_EPS
    """Threshold eps of the sink metric."""
    sink_k: int = SINK_K
    """Report Sink_1..Sink_k."""

    global_batch_size: int = 512
    """Sequences per optimizer step, over all devices."""
    micro_batch_size: int = 4
    """Sequences per forward pass on one device; accumulation = global / (devices * micro)."""
    max_step: int = 25000
    """Optimizer steps of the whole run (the cosine ends here)."""
    learning_rate: float = 4e-4
    """Peak learning rate."""
    min_lr: float = 1e-5
    """Final learning rate of the cosine (equal to `learning_rate` = constant after warmup)."""
    decay_lr: bool = True
    """Use the warmup + cosine schedule; False keeps `learning_rate` throughout."""
    cooldown_steps: int = 0
    """Instead of the cosine, hold `learning_rate` after warmup and decay linearly to `min_lr` over the last N
    optimizer steps (warmup-stable-decay); 0 keeps the cosine."""
    warmup_steps: int = 1000
    """Linear warmup, in optimizer steps."""
    weight_decay: float = 0.1
    """AdamW weight decay."""
    decay_norms_and_biases: bool = True
    """Decay every parameter (upstream); False exempts norm gains, biases and k*/v* slots."""
    beta1: float = 0.9
    """AdamW beta1."""
    beta2: float = 0.95
    """AdamW beta2."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (0 disables)."""
    seed: int = 3406
    """Seed of the model init and the data order (upstream `data_seed`)."""

    eval_step_interval: int = 1000
    """Validate every N optimizer steps."""
    eval_iters: int = 50
    """Batches per validation domain."""
    save_step_interval: int = 1000
    """Checkpoint every N optimizer steps (and at the end)."""
    log_step_interval: int = 10
    """Log training metrics every N optimizer steps."""
    keep_last: int = 0
    """Keep only the newest N checkpoints (0 keeps all)."""

    devices: Union[int, str] = "auto"
    """Devices per node (upstream `num_of_devices`); `auto` = all GPUs, or 1 CPU process."""
    num_nodes: int = 1
    """Nodes (upstream `num_of_nodes`); launch with `fabric run`, torchrun or SLURM."""
    strategy: str = "auto"
    """`auto | ddp | fsdp` (FSDP2: parameters, gradients and optimizer state sharded over all processes, one
    unit per Block; needs 2+ processes; GPUs or CPUs; checkpoints as unsharded runs write them)."""
    precision: Optional[str] = None
    """Fabric precision; `bf16-mixed` on GPUs that support it, `32-true` otherwise."""
    compile: bool = False
    """Compile the model with torch.compile."""
    activation_checkpointing: bool = False
    """Recompute each Block's activations in the backward pass (saves memory)."""
    peak_flops: Optional[float] = None
    """Peak FLOP/s of one device for MFU; known GPUs are looked up, CPUs measured, when empty."""

    out_name: str = "default_model"
    """Run name: checkpoints go to `<checkpoint_root>/<out_name>/`."""
    checkpoint_root: Path = Path("checkpoints")
    """Parent folder of all runs' checkpoint folders."""
    resume: Union[bool, str] = False
    """`True`: newest checkpoint of this run (must exist); `auto`: newest if any; or a checkpoint path."""
    logger: str = "wandb"
    """Dashboard: `wandb` (online with WANDB_API_KEY, else offline), `tensorboard`, or `csv`/`none` for
    none. CSV metrics are always written."""
    progress_bar: bool = True
    """Show a console progress bar with loss, tokens/s and ETA."""

    @property
    def out_dir(self) -> Path:
        return self.checkpoint_root / self.out_name

    def model_config(self) -> Config:
        return Config.from_name(self.model_name, **self.model)

    def attention_runtime(self):
        """The `AttentionRuntime` (backend, chunk size) the run's model computes with."""
        from lit_gpt.model.attention.runtime import AttentionRuntime

        return AttentionRuntime(self.attn_backend, self.attn_chunk_size)

    def to_dict(self) -> dict[str, Any]:
        """Plain types only, for checkpoints and logger hyperparameters."""
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(self).items()}

    def validate(self) -> None:
        """Raise `ArgsError`/`ConfigError` for values no run can use (world size is checked at setup), before
        any process starts, so no optimizer, loader or plot fails on them later."""
        self.checked_model()

    def checked_model(self) -> Config:
        """Check every value (as `validate`) and return the model `Config` the checks built, so that
        `lit_gpt.training.run_plan.resolve` builds it once."""
        from lit_gpt.measurement.loss import ignored_predictions

        choices = {"strategy": STRATEGIES, "logger": LOGGERS, "precision": PRECISIONS + (None,)}
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ArgsError(f"{key}={getattr(self, key)!r} is not one of {', '.join(map(str, allowed))}")
        self._check_numbers()
        self._check_mixture()
        if self.learning_rate <= 0:
            raise ArgsError(f"learning_rate must be positive, got {self.learning_rate}")
        for key in NON_NEGATIVE_FLOATS:
            if getattr(self, key) < 0:
                raise ArgsError(f"{key} must be >= 0, got {getattr(self, key)}")
        if self.min_lr > self.learning_rate:
            raise ArgsError(
                f"min_lr={self.min_lr} is above learning_rate={self.learning_rate}; the schedule decays "
                "from learning_rate to min_lr"
            )
        for key in ("beta1", "beta2"):
            if not 0 <= getattr(self, key) < 1:
                raise ArgsError(f"{key} must be in [0, 1), got {getattr(self, key)}")
        if not 0 < self.sink_eps < 1:
            raise ArgsError(f"sink_eps must be in (0, 1) (a share of attention), got {self.sink_eps}")
        if self.peak_flops is not None and self.peak_flops <= 0:
            raise ArgsError(f"peak_flops must be positive (FLOP/s of one device), got {self.peak_flops}")
        if self.devices != "auto" and (isinstance(self.devices, str) or self.devices < 1):
            raise ArgsError(f"devices must be 'auto' or a positive number, got {self.devices!r}")
        if self.strategy == "fsdp" and self.precision not in FSDP_PRECISIONS + (None,):
            raise ArgsError(
                f"precision={self.precision!r} does not work with strategy=fsdp; use one of "
                f"{', '.join(FSDP_PRECISIONS)}"
            )
        if not 0 < self.downsample_ratio <= 1:
            raise ArgsError(f"downsample_ratio must be in (0, 1], got {self.downsample_ratio}")
        if (self.random_token_start is None) != (self.random_token_end is None):
            raise ArgsError("set both random_token_start and random_token_end (the span is [start, end))")
        if (
            self.random_token_start is not None
            and self.random_token_end is not None
            and not 0 <= self.random_token_start < self.random_token_end
        ):
            raise ArgsError(
                f"random token span [{self.random_token_start}, {self.random_token_end}) is empty or negative"
            )
        if isinstance(self.resume, str) and self.resume != "auto" and not Path(self.resume).is_file():
            raise ArgsError(f"resume={self.resume!r} is neither True, False, 'auto' nor an existing checkpoint file")
        self.attention_runtime()  # refuses an unknown backend or a negative chunk size before any process starts
        config = self.model_config()
        if ignored_predictions(config, self.ignore_loss) >= config.block_size:
            prefix = f" (a prefix LM ignores at least {config.prefix_tokens - 1})" if config.prefix_tokens > 1 else ""
            raise ArgsError(
                f"ignore_loss={self.ignore_loss}{prefix} leaves no prediction of a {config.block_size}-token block"
            )
        self._check_transforms(config)
        return config

    def _check_numbers(self) -> None:
        for item in dataclasses.fields(self):
            problem = number_problem(item.name, getattr(self, item.name))
            if problem:
                raise ArgsError(problem)
        samples = self.max_step * self.global_batch_size
        if samples > INT64_MAX:
            raise ArgsError(
                f"max_step * global_batch_size = {samples} samples exceeds the loader's 64-bit sample index "
                f"(at most {INT64_MAX}); lower one of them"
            )

    def _check_mixture(self) -> None:
        """Mixture weights are relative shares: none negative and, when a mixture is given, one positive."""
        for section in ("train", "valid"):
            negative = {key: weight for key, weight in getattr(self, section).items() if weight < 0}
            if negative:
                raise ArgsError(f"{section} weights must be >= 0, got {negative}; fix the mixture YAML")
        if self.train and not any(weight > 0 for weight in self.train.values()):
            raise ArgsError(f"train weights {self.train} need at least one positive weight; fix the mixture YAML")

    def _check_transforms(self, config: Config) -> None:
        """Positions must lie in a window (block_size + 1 tokens) and a fixed id in the vocabulary."""
        window = config.block_size + 1
        if self.fixed_token_pos is not None:
            if not 0 <= self.fixed_token_pos < window:
                raise ArgsError(f"fixed_token_pos={self.fixed_token_pos} is outside a {window}-token window")
            if not 0 <= self.fixed_token_id < config.vocab_size:
                raise ArgsError(
                    f"fixed_token_id={self.fixed_token_id} is not a token id of the model's "
                    f"vocab_size={config.vocab_size}"
                )
        if self.random_token_end is not None and self.random_token_end > window:
            raise ArgsError(f"random token span ends at {self.random_token_end}, past a {window}-token window")
