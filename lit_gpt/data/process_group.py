"""Running the preprocessing build in a process group of its own, so that one kill ends all of it.

Why: tokenization runs on litdata's worker processes, and those start helper processes of their own.
When a worker fails, litdata terminates the workers but not their helpers; when the command is
interrupted, nothing ends them, and Python's exit then waits on them forever. A forked child that leads
a new process group takes every process the build starts with it (orphans included, whoever their
parent is by then), so the command ends them all with one `killpg`, however the build ends: success, a
user error, a bug, a full disk, SIGTERM or Ctrl-C. Ctrl-C reaches only the command (the terminal signals
its own process group), which then ends the build itself.

The child resets SIGTERM and SIGINT to their defaults before anything else: processes it starts inherit
that, so pool workers stopped by their pool's own shutdown end quietly instead of raising the command's
`Interrupted` with a traceback.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import traceback
from multiprocessing.connection import Connection, wait
from typing import Any, Callable

from lit_gpt.core.errors import UserError, one_line

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class BuildProcessDied(UserError):
    """The build's process was killed from outside (out of memory, for one) before it could report."""


class BuildTraceback(Exception):
    """The traceback of an unexpected error in the build's process, shown as the cause of that error."""


def run_in_own_group(function: Callable[..., Any], *args: Any) -> Any:
    """`function(*args)` in a forked child that leads a new process group: its return value, or its exception
    raised here. When this returns or raises (an interrupt included), no process of the group is left."""
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_lead_group, args=(send, function, args), name="preprocessing build")
    try:
        child.start()
        assert child.pid is not None  # set by start()
        _make_group(child.pid)  # the child does the same; whichever runs first, the group exists before work
        send.close()
        return _outcome(child, receive)
    finally:
        send.close()
        if child.pid is not None:
            _kill_group(child.pid)
            child.join()
        receive.close()


def _lead_group(send: Connection, function: Callable[..., Any], args: tuple) -> None:
    _make_group(0)
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)
    outcome: tuple[Any, ...]
    try:
        outcome = ("returned", function(*args))
    except BaseException as error:
        outcome = ("raised", error, traceback.format_exc())
    try:
        send.send(outcome)
    except Exception:  # an exception that does not pickle: keep its words
        send.send(("raised", RuntimeError(one_line(outcome[1])), outcome[-1]))


def _make_group(pid: int) -> None:
    try:
        os.setpgid(pid, pid)
    except (ProcessLookupError, PermissionError):  # already gone, or already leading its group
        pass


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:  # every process of it has ended
        pass


def _outcome(child, receive: Connection) -> Any:
    """Wait for the child's report; its own helpers may keep the pipe open, so its exit is watched too."""
    wait([receive, child.sentinel])
    try:
        report = receive.recv() if receive.poll() else None
    except EOFError:
        report = None
    if report is None:
        child.join()
        how = f"by {signal.Signals(-child.exitcode).name}" if child.exitcode < 0 else f"with status {child.exitcode}"
        raise BuildProcessDied(
            f"the preprocessing build process was ended {how} before it finished (out of memory?); "
            f"nothing was replaced: lower --num_workers or free memory and run it again"
        )
    kind, *rest = report
    if kind == "returned":
        return rest[0]
    error, text = rest
    if isinstance(error, UserError):
        raise error
    raise error from BuildTraceback(text)
