"""Arguments of a pretraining run: one dataclass, one YAML per run, command-line overrides.

Precedence: defaults < run YAML (`--data_yaml_file`, alias `--config`) < command line. A run YAML
holds only what differs from the defaults, which are upstream's script defaults, so upstream YAMLs
(sail-sg/Attention-Sink `configs/*.yaml`) describe the same run here:

* training keys are the `TrainArgs` field names (`global_batch_size`, `max_step`, ...);
* `train:` / `valid:` map domain prefixes to mixture weights, as upstream;
* model fields override the `model_name` preset, flat (`attn_score: sigmoid`) or nested
  (`model: {attn_score: sigmoid}`); on the command line they are `--model.attn_score sigmoid`;
* upstream spellings are renamed (`num_of_devices` -> `devices`, `data_seed` -> `seed`, ...) and the
  mixture-search keys upstream YAMLs carry (`temperature`, `min_strength`, ...) are accepted and unused.

Anything else is an error that lists the valid keys.
"""

from __future__ import annotations

import dataclasses
import sys
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional, Union

import docstring_parser
import yaml
from jsonargparse import ArgumentError, ArgumentParser

from lit_gpt.attention.runtime import AttentionRuntime
from lit_gpt.config import RUNTIME_KEYS, Config, ConfigError
from lit_gpt.errors import UserError, argument_message, fail
from lit_gpt.loss import ignored_predictions

STRATEGIES = ("auto", "ddp", "fsdp")
LOGGERS = ("wandb", "tensorboard", "csv", "none")
CONFIG_FLAGS = ("--data_yaml_file", "--config")

# Upstream key -> ours.
RENAMED = {"num_of_devices": "devices", "num_of_nodes": "num_nodes", "data_seed": "seed",
           "fix_position": "fixed_token_pos"}
# Keys upstream YAMLs carry that do not configure training: RegMix mixture-search parameters, and
# `total_devices`, which we derive from `devices * num_nodes`.
IGNORED = ("temperature", "min_strength", "max_strength", "minimum", "sample_multiplier", "maximum_usage",
           "total_devices")


class ArgsError(UserError, ValueError):
    """A run configuration that cannot be used; the message names the key and how to fix it."""


@dataclass
class TrainArgs:
    """Pretraining run (upstream `pretrain/tinyllama.py`).

    Every field is a command-line flag and a key of the run YAML.
    """

    model_name: str = "tinyllama_60M"
    """Model preset from `lit_gpt.config.PRESETS` (upstream names accepted)."""
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
    sink_eps: float = 0.3
    """Threshold eps of the sink metric."""
    sink_k: int = 10
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
    """`auto | ddp | fsdp` (FSDP: full shard, one unit per Block, model built on the meta device)."""
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

    def attention_runtime(self) -> AttentionRuntime:
        return AttentionRuntime(self.attn_backend, self.attn_chunk_size)

    def to_dict(self) -> dict[str, Any]:
        """Plain types only, for checkpoints and logger hyperparameters."""
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(self).items()}

    def validate(self) -> None:
        """Raise `ArgsError`/`ConfigError` for values no run can use (world size is checked at setup)."""
        if self.strategy not in STRATEGIES:
            raise ArgsError(f"strategy={self.strategy!r} is not one of {', '.join(STRATEGIES)}")
        if self.logger not in LOGGERS:
            raise ArgsError(f"logger={self.logger!r} is not one of {', '.join(LOGGERS)}")
        positive = ("global_batch_size", "micro_batch_size", "max_step", "eval_step_interval", "save_step_interval",
                    "log_step_interval")
        for key in positive:
            if getattr(self, key) <= 0:
                raise ArgsError(f"{key} must be positive, got {getattr(self, key)}")
        for key in ("warmup_steps", "eval_iters", "keep_last", "ignore_loss"):
            if getattr(self, key) < 0:
                raise ArgsError(f"{key} must be >= 0, got {getattr(self, key)}")
        if not 0 < self.downsample_ratio <= 1:
            raise ArgsError(f"downsample_ratio must be in (0, 1], got {self.downsample_ratio}")
        if (self.random_token_start is None) != (self.random_token_end is None):
            raise ArgsError("set both random_token_start and random_token_end (the span is [start, end))")
        if self.random_token_start is not None and not 0 <= self.random_token_start < self.random_token_end:
            raise ArgsError(f"random token span [{self.random_token_start}, {self.random_token_end}) is empty or negative")
        if isinstance(self.resume, str) and self.resume != "auto" and not Path(self.resume).is_file():
            raise ArgsError(f"resume={self.resume!r} is neither True, False, 'auto' nor an existing checkpoint file")
        self.attention_runtime()  # refuses an unknown backend or a negative chunk size before any process starts
        config = self.model_config()
        if ignored_predictions(config, self.ignore_loss) >= config.block_size:
            raise ArgsError(f"ignore_loss={self.ignore_loss} (at least prefix_tokens - 1 = {config.prefix_tokens - 1}) "
                            f"leaves no prediction of a {config.block_size}-token block")


ARG_FIELDS = tuple(f.name for f in fields(TrainArgs) if f.name != "model")
MODEL_FIELDS = tuple(name for name in Config.field_names() if name != "name")


def valid_keys() -> list[str]:
    return sorted(ARG_FIELDS + MODEL_FIELDS + tuple(RENAMED) + IGNORED + ("model",))


def normalize_run_yaml(raw: Any, source: str = "run YAML") -> dict[str, Any]:
    """Map a run YAML onto parser keys (`model.<field>` for model overrides); unknown keys are an error."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ArgsError(f"{source} must be a mapping of keys to values, got {type(raw).__name__}")
    values: dict[str, Any] = {}
    unknown = []
    for key, value in raw.items():
        key = RENAMED.get(key, key)
        if key in IGNORED:
            continue
        if key == "model":
            if not isinstance(value, dict):
                raise ArgsError(f"{source}: 'model' must map Config fields to values, got {value!r}")
            bad = sorted(set(value) - set(MODEL_FIELDS) - set(RUNTIME_KEYS))
            if bad:
                raise ArgsError(f"{source}: unknown model field(s) {', '.join(bad)}; valid: {', '.join(MODEL_FIELDS)}")
            values.update({(k if k in RUNTIME_KEYS else f"model.{k}"): v for k, v in value.items()})
        elif key in MODEL_FIELDS:
            values[f"model.{key}"] = value
        elif key in ARG_FIELDS:
            values[key] = value
        else:
            unknown.append(str(key))
    if unknown:
        raise ArgsError(f"{source}: unknown key(s) {', '.join(sorted(unknown))}; valid keys: {', '.join(valid_keys())}")
    return values


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """The mapping a YAML config file holds ({} for an empty file); `ArgsError` naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise ArgsError(f"config {path} does not exist; pass an existing YAML file to --config/--data_yaml_file")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ArgsError(f"{path} is not valid YAML: {error}") from None
    if raw is not None and not isinstance(raw, dict):
        raise ArgsError(f"{path} must be a mapping of keys to values, got {type(raw).__name__}")
    return raw or {}


def load_run_yaml(path: Path) -> dict[str, Any]:
    raw = read_yaml_mapping(path)
    if "base" in raw:
        # A layered experiment config (configs/**): compose it with its bases at the paper's scale.
        from lit_gpt.experiments import compose

        raw = compose(path)
    return normalize_run_yaml(raw, str(path))


def _config_path(argv: list[str]) -> Optional[str]:
    """The run YAML named on the command line (last one wins), found before the real parse."""
    found = None
    for i, arg in enumerate(argv):
        name, eq, value = arg.partition("=")
        if name in CONFIG_FLAGS:
            found = value if eq else (argv[i + 1] if i + 1 < len(argv) else None)
    return found


def build_parser() -> ArgumentParser:
    """The trainer's parser; it raises on bad input (`parse_args` decides how to report it)."""
    parser = ArgumentParser(prog="pretrain/tinyllama.py", description=TrainArgs.__doc__, exit_on_error=False,
                            default_meta=False)
    parser.add_class_arguments(TrainArgs, skip={"model", "data_yaml_file", *RUNTIME_KEYS})
    parser.add_argument(*CONFIG_FLAGS, dest="data_yaml_file", type=Optional[Path], default=None,
                        help="Run YAML: " + _doc(TrainArgs, "data_yaml_file"))
    # Former model fields keep their `--model.` spelling, which configs and scripts written before use.
    for name in RUNTIME_KEYS:
        parser.add_argument(f"--{name}", f"--model.{name}", dest=name, type=typing.get_type_hints(TrainArgs)[name],
                            default=getattr(TrainArgs, name), help=_doc(TrainArgs, name))
    hints = typing.get_type_hints(Config)
    for name in MODEL_FIELDS:
        parser.add_argument(f"--model.{name}", type=Optional[hints[name]], default=None, help=_doc(Config, name))
    return parser


def _doc(cls: type, name: str) -> str:
    for param in docstring_parser.parse_from_object(cls).params:
        if param.arg_name == name:
            return param.description or ""
    return ""


def typed_yaml_values(parser: ArgumentParser, values: dict[str, Any], source: str) -> dict[str, Any]:
    """Run-YAML values checked and converted by the parser's own types, exactly as the same flags would be
    (`max_step: ten` is refused, `learning_rate: 1e-3`, a string to YAML, becomes a float)."""
    hints = {**typing.get_type_hints(TrainArgs), **{f"model.{k}": v for k, v in typing.get_type_hints(Config).items()}}
    typed = {}
    for key, value in values.items():
        head, _, field_name = key.partition(".")
        try:
            namespace = parser.parse_object({head: {field_name: value}} if field_name else {key: value}, defaults=False)
        except ArgumentError:
            raise ArgsError(f"{source}: {key} must be {_type_text(hints[key])}, got {value!r}; fix the value in the "
                            f"YAML") from None
        typed[key] = namespace[key]
    return typed


def _type_text(hint: Any) -> str:
    """`Optional[int]` -> 'int or null', for messages a YAML author reads."""
    args = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    if typing.get_origin(hint) is Union and args:
        return " or ".join(_type_text(arg) for arg in args) + (" or null" if type(None) in typing.get_args(hint) else "")
    return getattr(hint, "__name__", str(hint).replace("typing.", ""))


def parse_args(argv: Optional[list[str]] = None, exit_on_error: bool = True) -> TrainArgs:
    """Parse a command line (with the run YAML it names) into validated `TrainArgs`.

    Every problem (an unknown flag or key, a value of the wrong type, an invalid setting) ends in one
    `error:` line and exit status 2; with `exit_on_error=False` it raises instead (`ArgsError`,
    `ConfigError` or jsonargparse's `ArgumentError`).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    try:
        yaml_path = _config_path(argv)
        if yaml_path is not None:
            parser.set_defaults(typed_yaml_values(parser, load_run_yaml(Path(yaml_path)), yaml_path))
        namespace = parser.parse_args(argv).as_dict()
        model = {k: v for k, v in namespace.pop("model", {}).items() if v is not None}
        args = TrainArgs(**namespace, model=model)
        args.validate()
    except (ArgsError, ConfigError, ArgumentError) as error:
        if not exit_on_error:
            raise
        fail(f"{argument_message(error)} (see --help)" if isinstance(error, ArgumentError) else error, status=2)
    return args
