"""Writing outputs (reports, JSON, plots, composed configs): atomically, or not at all.

Why: an output is written next to its final name and renamed into place once complete, so a crash, a
kill or a full disk never leaves a half-written file where a complete one used to be. A path that
cannot take the output (a file where a folder is needed, a folder where a file is needed, no
permission) is an `OutputError` naming it, raised before anything is written.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Union

from lit_gpt.errors import UserError


class OutputError(UserError):
    """An output path that cannot be written; the message names it and what to do."""


def as_if_created(path: Union[str, Path]) -> Path:
    """Give a `tempfile` file or folder (created private, 0600/0700) the permissions an ordinary `open` or
    `mkdir` would have under the current umask, so outputs stay readable by whoever may read the others."""
    umask = os.umask(0)
    os.umask(umask)
    path = Path(path)
    os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask)
    return path


def output_folder(path: Union[str, Path]) -> Path:
    """`path` as an existing folder this process may write into (created with its parents when missing)."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise OutputError(f"{path} (or a parent of it) is a file, not a folder; choose another output folder") from None
    except PermissionError:
        raise OutputError(f"no permission to create {path}; choose another output folder") from None
    except OSError as error:
        raise OutputError(f"cannot create {path} ({error.strerror}); choose another output folder") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise OutputError(f"no permission to write into {path}; choose another output folder")
    return path


def write_atomic(path: Union[str, Path], data: Union[str, bytes]) -> Path:
    """Write `data` (text as UTF-8) to `path` through a temporary sibling renamed into place."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path} is a folder; give a file name for this output")
    folder = output_folder(path.parent)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
        os.replace(as_if_created(tmp), path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_text(path: Union[str, Path], what: str) -> str:
    """A UTF-8 text file the user named (`what` says which flag); `OutputError` naming it otherwise."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or type(error).__name__
        raise OutputError(f"{what} {path} cannot be read as UTF-8 text ({reason}); pass an existing text file") from None


def write_json(path: Union[str, Path], value: Any) -> Path:
    return write_atomic(path, json.dumps(value, indent=1, default=str) + "\n")


def save_figure(fig, path: Union[str, Path], dpi: int = 110) -> Path:
    """A matplotlib figure as an image file (format from the suffix), written atomically."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path} is a folder; give a file name for this plot")
    folder = output_folder(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=folder)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=dpi)
        os.replace(as_if_created(tmp), path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


__all__ = ["OutputError", "as_if_created", "output_folder", "read_text", "save_figure", "write_atomic", "write_json"]
