"""A run's configuration in one place: run YAML files (reading, `base:` chains, scales, upstream key names),
the command line, and their validation.

Precedence: defaults < run YAML (`--data_yaml_file`, alias `--config`) < command line. A run YAML
holds only what differs from the defaults, which are upstream's script defaults, so upstream YAMLs
(sail-sg/Attention-Sink `configs/*.yaml`) describe the same run here:

* training keys are the `TrainArgs` field names (`global_batch_size`, `max_step`, ...);
* `train:` / `valid:` map domain prefixes to mixture weights, as upstream;
* model fields override the `model_name` preset, flat (`attn_score: sigmoid`) or nested
  (`model: {attn_score: sigmoid}`); on the command line they are `--model.attn_score sigmoid`;
* upstream spellings are renamed (`num_of_devices` -> `devices`, `data_seed` -> `seed`, ...) and the
  mixture-search keys upstream YAMLs carry (`temperature`, `min_strength`, ...) are accepted and unused;
* every value is checked and converted by the same typed parser as the flag it stands for.

Anything else is an error that names the file and key.

Layered experiment configs: a YAML under `configs/` holds only what differs from its base, which it
names with `base:` (a path relative to the file); `configs/tinyllama_60m.yaml` is the root. The files
that pick the model preset (`model_name`: the 60M and 1B setups) describe the paper's setup: model,
data, batch, schedule, devices. A scale other than `paper` replaces that setup with the chain of
`configs/<scale>/base.yaml`, laid right after the last setup file and under the variant files, so a
sweep YAML changes the same key at every scale. A file's `<scale>:` section holds the values that must
differ at that scale (a batch size relative to the scale's default, a window relative to its block)
and is applied right after the file; a setup file's section comes after the scale's base that replaces
the setup, so a setup of another model names its counterpart at that scale (`configs/gpt2/gpt2_small.yaml`:
`gpt2_tiny` at the cpu scale). For `configs/lr/tinyllama_60m_lr1e-3.yaml` at scale `cpu` the layers are

    TrainArgs defaults < tinyllama_60m.yaml < data/embedded.yaml < cpu/base.yaml < lr/..._lr1e-3.yaml
                       < its `cpu:` section < command line
"""

from __future__ import annotations

import dataclasses
import functools
import sys
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

import docstring_parser
import yaml
from jsonargparse import ArgumentError, ArgumentParser

from lit_gpt.core.errors import argument_message, fail
from lit_gpt.core.files import write_atomic
from lit_gpt.core.flags import new_parser, parse
from lit_gpt.model.config import RUNTIME_KEYS, Config, ConfigError
from lit_gpt.training.train_args import ArgsError, TrainArgs, number_problem

if TYPE_CHECKING:  # the plan holds torch objects; parsing alone must not import torch
    from lit_gpt.training.run_plan import RunPlan

CONFIG_FLAGS = ("--data_yaml_file", "--config")
PRINT_CONFIG = "--print_config"
CONFIGS = Path(__file__).resolve().parents[2] / "configs"
PAPER = "paper"
BASE_KEY = "base"

# Upstream key -> ours.
RENAMED = {
    "num_of_devices": "devices",
    "num_of_nodes": "num_nodes",
    "data_seed": "seed",
    "fix_position": "fixed_token_pos",
}
# Keys upstream YAMLs carry that do not configure training: RegMix mixture-search parameters, and
# `total_devices`, which we derive from `devices * num_nodes`.
IGNORED = (
    "temperature",
    "min_strength",
    "max_strength",
    "minimum",
    "sample_multiplier",
    "maximum_usage",
    "total_devices",
)


ARG_FIELDS = tuple(f.name for f in dataclasses.fields(TrainArgs) if f.name != "model")
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
        raise ArgsError(f"config {path} does not exist or is not a file; pass an existing YAML file")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ArgsError(f"{path} is not UTF-8 text; save the YAML as UTF-8") from None
    except yaml.YAMLError as error:
        raise ArgsError(f"{path} is not valid YAML: {error}") from None
    if raw is not None and not isinstance(raw, dict):
        raise ArgsError(f"{path} must be a mapping of keys to values, got {type(raw).__name__}")
    return raw or {}


def load_run_yaml(path: Path) -> dict[str, Any]:
    raw = read_yaml_mapping(path)
    if BASE_KEY in raw:
        # A layered experiment config (configs/**): compose it with its bases at the paper's scale.
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
    parser = new_parser(TrainArgs.__doc__, default_meta=False)
    parser.add_class_arguments(TrainArgs, skip={"model", "data_yaml_file", *RUNTIME_KEYS})
    parser.add_argument(
        *CONFIG_FLAGS,
        dest="data_yaml_file",
        type=Optional[Path],
        default=None,
        help="Run YAML: " + _doc(TrainArgs, "data_yaml_file"),
    )
    # Former model fields keep their `--model.` spelling, which configs and scripts written before use.
    for name in RUNTIME_KEYS:
        parser.add_argument(
            f"--{name}",
            f"--model.{name}",
            dest=name,
            type=typing.get_type_hints(TrainArgs)[name],
            default=getattr(TrainArgs, name),
            help=_doc(TrainArgs, name),
        )
    hints = typing.get_type_hints(Config)
    for name in MODEL_FIELDS:
        parser.add_argument(f"--model.{name}", type=Optional[hints[name]], default=None, help=_doc(Config, name))
    # Shown in the help only: `parse_args` takes the flag out of the command line before parsing (jsonargparse
    # keeps the name for its own action).
    parser.add_argument(
        PRINT_CONFIG,
        dest="print_run_yaml",
        type=bool,
        nargs="?",
        const=True,
        default=False,
        help="Print the run's settings (YAML, command line and defaults merged and checked) as a run "
        "YAML and exit, without training.",
    )
    return parser


def _doc(cls: type, name: str) -> str:
    return _field_docs(cls).get(name, "")


@functools.lru_cache(maxsize=None)
def _field_docs(cls: type) -> dict[str, str]:
    """Each field's docstring, read once per class: parsing a class's source for every field and every run
    made composing the configs/ tree take minutes."""
    return {param.arg_name: param.description or "" for param in docstring_parser.parse_from_object(cls).params}


def typed_yaml_values(parser: ArgumentParser, values: dict[str, Any], source: str) -> dict[str, Any]:
    """Run-YAML values checked and converted by the parser's own types, exactly as the same flags would be
    (`max_step: ten` is refused, `learning_rate: 1e-3`, a string to YAML, becomes a float); NaN, infinities and
    integers out of range are refused here, naming the file, not later by the run."""
    hints = {**typing.get_type_hints(TrainArgs), **{f"model.{k}": v for k, v in typing.get_type_hints(Config).items()}}
    typed = {}
    for key, value in values.items():
        head, _, field_name = key.partition(".")
        try:
            namespace = parser.parse_object({head: {field_name: value}} if field_name else {key: value}, defaults=False)
        except ArgumentError:
            raise ArgsError(
                f"{source}: {key} must be {_type_text(hints[key])}, got {value!r}; fix the value in the YAML"
            ) from None
        problem = number_problem(key, namespace[key])
        if problem:
            raise ArgsError(f"{source}: {problem} in the YAML")
        typed[key] = namespace[key]
    return typed


def _type_text(hint: Any) -> str:
    """`Optional[int]` -> 'int or null', for messages a YAML author reads."""
    args = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    if typing.get_origin(hint) is Union and args:
        return " or ".join(_type_text(arg) for arg in args) + (
            " or null" if type(None) in typing.get_args(hint) else ""
        )
    return getattr(hint, "__name__", str(hint).replace("typing.", ""))


def parse_args(argv: Optional[list[str]] = None, exit_on_error: bool = True) -> TrainArgs:
    """Parse a command line (with the run YAML it names) into validated `TrainArgs`.

    Every problem (an unknown flag or key, a value of the wrong type, an invalid setting) ends in one
    `error:` line and exit status 2; with `exit_on_error=False` it raises instead (`ArgsError`,
    `ConfigError` or jsonargparse's `ArgumentError`).
    """
    return _parsed(argv, exit_on_error)[0]


def parse_plan(argv: Optional[list[str]] = None, exit_on_error: bool = True) -> "RunPlan":
    """As `parse_args`, for the trainer: the `RunPlan` the checks built, so a run is checked once."""
    return _parsed(argv, exit_on_error)[1]


def _parsed(argv: Optional[list[str]], exit_on_error: bool) -> tuple[TrainArgs, "RunPlan"]:
    argv = sys.argv[1:] if argv is None else list(argv)
    show = PRINT_CONFIG in argv
    argv = [arg for arg in argv if arg != PRINT_CONFIG]
    parser = build_parser()
    try:
        yaml_path = _config_path(argv)
        if yaml_path is not None:
            parser.set_defaults(typed_yaml_values(parser, load_run_yaml(Path(yaml_path)), yaml_path))
        namespace = parse(parser, argv).as_dict()
        namespace.pop("print_run_yaml", None)
        model = {k: v for k, v in namespace.pop("model", {}).items() if v is not None}
        args = TrainArgs(**namespace, model=model)
        from lit_gpt.training.run_plan import resolve  # imports torch: only once the arguments are read

        plan = resolve(args)
    except (ArgsError, ConfigError, ArgumentError) as error:
        if not exit_on_error:
            raise
        fail(f"{argument_message(error)} (see --help)" if isinstance(error, ArgumentError) else error, status=2)
    if show:
        settings = {key: value for key, value in args.to_dict().items() if key != "data_yaml_file"}
        print(yaml.safe_dump(settings, sort_keys=False), end="")
        sys.exit(0)
    return args, plan


# ------------------------------------------------------------------------------ layered configs
def scales(root: Path = CONFIGS) -> list[str]:
    """`paper` and every folder of `root` holding a `base.yaml`."""
    return [PAPER] + sorted(path.parent.name for path in Path(root).glob("*/base.yaml"))


def chain(path: Path) -> list[Path]:
    """`path` and its bases, root first."""
    files: list[Path] = []
    path = Path(path).resolve()
    while True:
        if path in files:
            raise ArgsError(f"{path} is its own base (through {', '.join(map(str, files))})")
        files.insert(0, path)
        base = read_yaml_mapping(path).get(BASE_KEY)
        if base is None:
            return files
        path = (path.parent / base).resolve()


def _layers(path: Path, known_scales: list[str], scale: str) -> list[dict[str, Any]]:
    """Parser-keyed values of `path` and of its `scale` section, validated by the trainer's rules."""
    raw = read_yaml_mapping(path)
    own = {key: value for key, value in raw.items() if key != BASE_KEY and key not in known_scales}
    layers = [normalize_run_yaml(own, str(path))]
    section = raw.get(scale)
    if scale != PAPER and section is not None:
        if not isinstance(section, dict):
            raise ArgsError(f"{path}: the '{scale}:' section must map keys to values")
        layers.append(normalize_run_yaml(section, f"{path} ({scale}: section)"))
    return layers


def compose(path: Path, scale: str = PAPER, root: Path = CONFIGS) -> dict[str, Any]:
    """The run YAML (a nested mapping) of config `path` at `scale`; see the module docstring."""
    known = scales(root)
    if scale not in known:
        raise ArgsError(f"unknown scale {scale!r}; valid scales: {', '.join(known)}")
    files = chain(path)
    setup = None
    if scale != PAPER:
        setup = max(index for index, file in enumerate(files) if index == 0 or "model_name" in read_yaml_mapping(file))
    values: dict[str, Any] = {}
    for index, file in enumerate(files):
        own, *section = _layers(file, known, scale)
        values.update(own)
        if index == setup:
            for scale_file in chain(Path(root) / scale / "base.yaml"):
                for layer in _layers(scale_file, known, scale):
                    values.update(layer)
        for layer in section:
            values.update(layer)
    return _nest(values)


def _nest(values: dict[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {key: value for key, value in values.items() if not key.startswith("model.")}
    model = {key.removeprefix("model."): value for key, value in values.items() if key.startswith("model.")}
    if model:
        nested["model"] = model
    return nested


def write_run_yaml(values: dict[str, Any], out: Path, sources: str = "") -> Path:
    header = f"# Composed from {sources}; edit the configs/ files, not this one.\n" if sources else ""
    return write_atomic(out, header + yaml.safe_dump(values, sort_keys=False))


__all__ = [
    "CONFIGS",
    "PAPER",
    "build_parser",
    "chain",
    "compose",
    "load_run_yaml",
    "normalize_run_yaml",
    "parse_args",
    "read_yaml_mapping",
    "scales",
    "typed_yaml_values",
    "valid_keys",
    "write_run_yaml",
]
