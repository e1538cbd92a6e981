"""User-facing errors and the one place each command line turns them into `error: ...`.

Why: a user's mistake (a bad flag, a missing or corrupt file, a wrong tokenizer) must read differently
from a bug. Every module raises its own subclass of `UserError` with a message that names the culprit
and the fix; every entry point runs through `run_cli`, which prints that message as one line on stderr
and exits non-zero. Anything else is a bug and keeps its traceback.

Signals: before training installs its own graceful handler (save, then exit), SIGTERM and SIGINT stop
the program at once with one line and exit status 128 + signal number, the shell convention. Nothing
is lost by that: start-up writes nothing that a later run cannot rebuild.
"""

from __future__ import annotations

import re
import signal
import sys
from argparse import ArgumentError
from typing import Any, Callable, NoReturn


class UserError(Exception):
    """Input that cannot be used; the message names the file, key or value and what to do."""

    exit_status = 1


class Interrupted(BaseException):
    """SIGTERM/SIGINT arrived while the program was not in a state that could stop gracefully."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_interrupted(signum, frame) -> NoReturn:
    raise Interrupted(signum)


def one_line(message: object) -> str:
    """The message with its line breaks folded, so the user sees exactly one `error:` line."""
    return " ".join(str(message).split())


def fail(message: object, status: int = 1) -> NoReturn:
    print(f"error: {one_line(message)}", file=sys.stderr)
    sys.exit(status)


def argument_message(error: Exception) -> str:
    """jsonargparse's multi-line type error as one short line: `--top_k: expected int or None, got 'abc'`,
    `--add_bos: expected one of 'auto', 'true', 'false', got 'maybe'`."""
    text = str(error)
    key = re.search(r'Parser key "([^"]+)"', text)
    value = re.search(r"(?:Given|Got) value: (.*)$", text, re.MULTILINE)
    expected = re.findall(r"Expected a <class '(\w+)'>", text)
    choices = re.search(r"Expected a typing\.Literal\[(.*)\]", text)
    if key and value and choices:
        return f"--{key.group(1)}: expected one of {choices.group(1)}, got {value.group(1).strip()!r}"
    if not (key and value and expected):
        return one_line(text)
    names = [("None" if name == "NoneType" else name) for name in dict.fromkeys(expected)]
    given = value.group(1).strip()
    if "float" in names and _is_float(given):  # jsonargparse refuses nan and inf as floats
        names[names.index("float")] = "a finite float"
    return f"--{key.group(1)}: expected {' or '.join(names)}, got {given!r}"


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def run_cli(main: Callable[[], Any]) -> Any:
    """Run an entry point's `main()`: `UserError` -> one `error:` line and its `exit_status` (1; 2 for a setting
    of a flag or YAML file); a flag its parser refused (parsers built with `exit_on_error=False`) -> one line
    and exit 2; SIGTERM/SIGINT before a graceful handler takes over -> one line and exit 128 + signal."""
    previous = {sig: signal.signal(sig, _raise_interrupted) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return main()
    except UserError as error:
        fail(error, error.exit_status)
    except ArgumentError as error:  # a flag the parser refused (unknown, missing, wrong type)
        fail(f"{argument_message(error)} (see --help)", status=2)
    except Interrupted as stop:
        fail(
            f"interrupted by {signal.Signals(stop.signum).name}; nothing of the interrupted work was written",
            128 + stop.signum,
        )
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


__all__ = ["Interrupted", "UserError", "fail", "one_line", "run_cli"]
