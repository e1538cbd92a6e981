"""What every command's parser shares: one flag per concept, help with readable types, `--config` /
`--print_config`, and a "did you mean" for a mistyped or litgpt-style flag.

One concept has one flag in every command; the spellings commands used before stay as aliases:

| concept | flag | also accepted |
|---|---|---|
| probe set (JSONL, `text` field) | `--probe_file` | `--probe` (sink-eval, sink-report, sink-eval-hf), `--text` (sink-streaming), `--probe_path` (sink-prepare) |
| sink threshold eps | `--sink_eps` | `--eps` |
| report Sink_1..Sink_k | `--sink_k` | `--positions` |
| folder a command writes into | `--out_dir` | `--out` (sink-report), `--output_dir` (sink-prepare) |
| JSON results file | `--json` | |
| folder of figures | `--plots` | |

Why these: the trainer's flags are also its YAML keys (`probe_file`, `sink_eps`, `sink_k`), so the other
commands speak the trainer's words. Imports here and at the top of each command module stay light (no
torch, Lightning or transformers): `--help` and a refused flag answer at once, and each command imports
the heavy modules inside the function it runs.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
from argparse import ArgumentError
from typing import Any, Callable, Mapping, Optional, Sequence, Union

from jsonargparse import ActionConfigFile, ArgumentParser, DefaultHelpFormatter, Namespace, set_parsing_settings

# Help texts come from the string under each dataclass field (TrainArgs, Config) as well as from `Args:` sections.
set_parsing_settings(docstring_parse_attribute_docstrings=True)

# The canonical flag of each concept -> the other spellings commands use (see the module docstring).
ALIASES = {
    "--probe_file": ("--probe", "--text", "--probe_path"),
    "--sink_eps": ("--eps",),
    "--sink_k": ("--positions",),
    "--out_dir": ("--out", "--output_dir"),
}
# litgpt's names (litgpt/pretrain.py, litgpt/args.py) of settings the trainer has under another name.
LITGPT_NAMES = {
    "max_steps": "max_step",
    "train.max_steps": "max_step",
    "lr_warmup_steps": "warmup_steps",
    "train.lr_warmup_steps": "warmup_steps",
    "log_interval": "log_step_interval",
    "train.log_interval": "log_step_interval",
    "save_interval": "save_step_interval",
    "train.save_interval": "save_step_interval",
    "eval.interval": "eval_step_interval",
    "eval.max_iters": "eval_iters",
    "train.global_batch_size": "global_batch_size",
    "train.micro_batch_size": "micro_batch_size",
    "train.min_lr": "min_lr",
    "train.max_norm": "grad_clip",
    "lr": "learning_rate",
    "optimizer.lr": "learning_rate",
    "optimizer.init_args.lr": "learning_rate",
    "optimizer.weight_decay": "weight_decay",
    "optimizer.init_args.weight_decay": "weight_decay",
    "logger_name": "logger",
    "tokenizer_dir": "tokenizer",
    "out_dir": "out_name",
    "data": "train_data_dir",
}
CONFIG_HELP = "YAML file of flag values (keys: the flag names without --); flags given after it override it."


class HelpFormatter(DefaultHelpFormatter):
    """jsonargparse's help with every type by name (`Path`, not `<class 'Path'>`)."""

    def _get_type_str(self, action: Any) -> Optional[str]:
        text = super()._get_type_str(action)
        return None if text is None else re.sub(r"<class '(?:[\w.]+\.)?(\w+)'>", r"\1", text)


def command_name(argv0: Optional[str] = None) -> str:
    """The command as the user typed it: a script's path (`pretrain/tinyllama.py`), a console script's name
    (`sink-train`, not the full path of its launcher)."""
    argv0 = sys.argv[0] if argv0 is None else argv0
    return argv0 if argv0.endswith(".py") and not os.path.isabs(argv0) else os.path.basename(argv0)


def new_parser(description: Optional[str], **kwargs: Any) -> ArgumentParser:
    """A command's parser: it raises instead of exiting (`run_cli` reports), takes no abbreviated flags, and its
    usage line names the command as the user typed it."""
    kwargs.setdefault("prog", command_name())
    return ArgumentParser(
        description=description, exit_on_error=False, allow_abbrev=False, formatter_class=HelpFormatter, **kwargs
    )


def add_config(parser: ArgumentParser) -> None:
    """`--config FILE` of flag values; jsonargparse adds `--print_config` with it."""
    parser.add_argument("--config", action=ActionConfigFile, help=CONFIG_HELP)


def function_parser(function: Callable, skip: Optional[set[Union[str, int]]] = None) -> ArgumentParser:
    """A parser whose flags are `function`'s parameters, documented by its docstring's `Args:`."""
    parser = new_parser(_summary(function))
    add_config(parser)
    parser.add_function_arguments(function, as_positional=False, skip=skip)
    add_aliases(parser)
    return parser


def _summary(function: Callable) -> Optional[str]:
    return (function.__doc__ or "").strip().split("\n\n")[0] or None


def add_aliases(parser: ArgumentParser, aliases: Optional[Mapping[str, Sequence[str]]] = None) -> None:
    """Give the flag `parser` has for each concept of `aliases` every other spelling of that concept as a second
    name, the canonical one first (a spelling another option already has stays that option's)."""
    for canonical, others in (ALIASES if aliases is None else aliases).items():
        spellings = (canonical, *others)
        action = next(
            (parser._option_string_actions[name] for name in spellings if name in parser._option_string_actions), None
        )
        if action is None:
            continue
        for name in spellings:
            if name not in parser._option_string_actions:
                parser._option_string_actions[name] = action
        own = [name for name in spellings if parser._option_string_actions[name] is action]
        action.option_strings = own + [name for name in action.option_strings if name not in own]
        action.metavar = action.metavar or canonical[2:].upper()


def parse(parser: ArgumentParser, argv: Optional[Sequence[str]]) -> Namespace:
    """`parser.parse_args`, where an unknown flag's error names the closest known one."""
    try:
        return parser.parse_args(argv)
    except ArgumentError as error:
        hints = did_you_mean(str(error), option_names(parser))
        if hints:
            raise ArgumentError(None, f"{error}; {hints}") from None
        raise


def option_names(parser: ArgumentParser) -> list[str]:
    """Every flag of `parser` and of its subcommands."""
    names = [name for name in parser._option_string_actions if name.startswith("--")]
    subcommands = getattr(parser, "_subcommands_action", None)
    for subparser in subcommands._name_parser_map.values() if subcommands else ():
        names += option_names(subparser)
    return names


def did_you_mean(message: str, options: Sequence[str]) -> str:
    """'did you mean --max_step?' for each unknown flag of a parser's "unrecognized arguments" `message` that is
    a litgpt name of one of `options` or close to one; '' when none is."""
    _, found, unknown = message.partition("unrecognized arguments:")
    hints = []
    for flag in dict.fromkeys(re.findall(r"--[\w.\-]+", unknown) if found else ()):
        ours = "--" + LITGPT_NAMES.get(flag[2:], "")
        close = [ours] if ours in options else difflib.get_close_matches(flag, options, n=1, cutoff=0.7)
        if close:
            hints.append(f"{flag}: did you mean {close[0]}?")
    return "; ".join(hints)


def run_function(function: Callable, argv: Optional[Sequence[str]], skip: Optional[set[Union[str, int]]] = None) -> Any:
    """Parse `argv` with `function_parser(function)` and call `function` with the values."""
    values = parse(function_parser(function, skip), argv).as_dict()
    values.pop("config", None)
    return function(**values)


__all__ = [
    "ALIASES",
    "HelpFormatter",
    "add_aliases",
    "add_config",
    "command_name",
    "did_you_mean",
    "function_parser",
    "new_parser",
    "option_names",
    "parse",
    "run_function",
]
