"""Writing outputs (reports, JSON, plots, composed configs, checkpoints): atomically, or not at all.

Why: an output is written next to its final name and renamed into place once complete, so a crash, a
kill or a full disk never leaves a half-written file where a complete one used to be. A path that
cannot take the output (a file where a folder is needed, a folder where a file is needed, no
permission) is an `OutputError` naming it, raised before anything is written. A full disk is a
`DiskFullError` naming the path, the space needed and the space free, with no temporary left behind.

The temporary name carries the writer's process id (`.NAME.<pid>.<random>.tmp`): a process killed mid-write
cannot remove its temporary, so the next write of the same output removes those whose process is gone,
and never one that a live process is still writing. Folders built beside their final name (a data build)
are named the same way, with a suffix of their own.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Optional, Union

from lit_gpt.core.errors import UserError


class OutputError(UserError):
    """An output path that cannot be written; the message names it and what to do."""


class DiskFullError(OutputError):
    """The disk of an output has no room for it; the message names the path, the space needed and free."""


# Errors of a write that found no room: the device is full, or the user's quota is.
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def is_disk_full(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno in NO_SPACE


def human_size(n_bytes: float) -> str:
    """`1.5 MB`, `820 kB`, `3.2 GB`: decimal units, as `df -H` prints them."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n_bytes) < 1000 or unit == "TB":
            return f"{n_bytes:.0f} {unit}" if unit == "B" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1000
    raise AssertionError("unreachable")


def free_space(path: Union[str, Path]) -> int:
    """Bytes free for this user on the disk that holds `path` (or its nearest existing parent)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def disk_full_error(path: Union[str, Path], needed: Optional[int] = None) -> DiskFullError:
    """The one-line error for an output `path` that found no room (`needed` bytes when known)."""
    need = f"it needs about {human_size(needed)} and " if needed else ""
    return DiskFullError(
        f"no space left on the disk of {path}: {need}{human_size(free_space(path))} are free; free "
        f"some space or write elsewhere (nothing was replaced; no partial file was left)"
    )


def ensure_space(path: Union[str, Path], needed: int) -> None:
    """Refuse, before writing anything, an output of `needed` bytes that the disk of `path` cannot hold."""
    if free_space(path) < needed:
        raise disk_full_error(path, needed)


def as_if_created(path: Union[str, Path]) -> Path:
    """Give a `tempfile` file or folder (created private, 0600/0700) the permissions an ordinary `open` or
    `mkdir` would have under the current umask, so outputs stay readable by whoever may read the others."""
    umask = os.umask(0)
    os.umask(umask)
    path = Path(path)
    os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask)
    return path


def check_writable(path: Union[str, Path], what: str) -> None:
    """Refuse, creating nothing, an output `path` that could not be written later: the nearest existing folder
    on its way is a file, not writable (permissions, a read-only disk), or `path` is a read-only file. Commands
    that write at the end of long work call this first."""
    path = Path(path).absolute()
    if path.is_file() and not os.access(path, os.W_OK):
        raise OutputError(f"{what} {path} is read-only; make it writable or choose another path")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise OutputError(f"{what} {path} cannot be created: {folder} is a file, not a folder; choose another path")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(
            f"{what} {path} cannot be written: no permission to write into {folder} (or its disk is "
            f"read-only); choose another path"
        )


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


TMP_SUFFIX = ".tmp"


def _temporaries(path: Path, suffix: str) -> re.Pattern:
    return re.compile(rf"^\.{re.escape(path.name)}\.(\d+)\.[^.]+{re.escape(suffix)}(\.\w+)?$")


def temporary_sibling(path: Union[str, Path]) -> Path:
    """A new empty file beside `path` under a name `remove_stale_temporaries` recognises, once its writer is
    gone; it keeps `path`'s suffix so writers that pick a format from the name (matplotlib) still can."""
    path = Path(path)
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=TMP_SUFFIX + path.suffix, dir=path.parent)
    os.close(fd)
    return Path(tmp)


def temporary_folder(path: Union[str, Path], suffix: str = TMP_SUFFIX) -> Path:
    """A new empty folder beside `path`, named as temporaries are (`.NAME.<pid>.<random><suffix>`), so
    `stale_temporaries(path, suffix)` finds it once its writer is gone; it never collides with a user's file."""
    path = Path(path)
    return as_if_created(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", suffix=suffix, dir=path.parent))


def _is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def stale_temporaries(path: Union[str, Path], suffix: str = TMP_SUFFIX) -> list[Path]:
    """The temporaries (files or folders) of `path` with `suffix` whose writer was killed (its process is gone)."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    pattern = _temporaries(path, suffix)
    return sorted(
        entry
        for entry in path.parent.iterdir()
        if (match := pattern.match(entry.name)) and not _is_running(int(match.group(1)))
    )


def remove_stale_temporaries(path: Union[str, Path]) -> list[Path]:
    """Remove the temporary files of `path` left by writers that were killed (their process is gone)."""
    stale = [entry for entry in stale_temporaries(path) if not entry.is_dir()]
    for entry in stale:
        entry.unlink(missing_ok=True)
    return stale


def write_through_temporary(path: Union[str, Path], write, needed: Optional[int] = None) -> Path:
    """Call `write(tmp)` on a temporary sibling of `path`, then rename it into place. Whatever happens, no
    temporary is left and an earlier `path` is unchanged; a full disk is a `DiskFullError`."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path} is a folder; give a file name for this output")
    output_folder(path.parent)
    if needed is not None:
        ensure_space(path, needed)
    tmp = temporary_sibling(path)
    try:
        write(tmp)
        os.replace(as_if_created(tmp), path)
    except BaseException as error:
        tmp.unlink(missing_ok=True)
        if is_disk_full(error):
            raise disk_full_error(path, needed) from None
        raise
    return path


def write_atomic(path: Union[str, Path], data: Union[str, bytes]) -> Path:
    """Write `data` (text as UTF-8) to `path` through a temporary sibling renamed into place."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    return write_through_temporary(path, lambda tmp: Path(tmp).write_bytes(payload), len(payload))


def read_text(path: Union[str, Path], what: str) -> str:
    """A UTF-8 text file the user named (`what` says which flag); `OutputError` naming it otherwise."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or type(error).__name__
        raise OutputError(
            f"{what} {path} cannot be read as UTF-8 text ({reason}); pass an existing text file"
        ) from None


def write_json(path: Union[str, Path], value: Any) -> Path:
    return write_atomic(path, json.dumps(value, indent=1, default=str) + "\n")


def save_figure(fig, path: Union[str, Path], dpi: int = 110) -> Path:
    """A matplotlib figure as an image file (format from the suffix), written atomically."""
    if Path(path).is_dir():
        raise OutputError(f"{path} is a folder; give a file name for this plot")
    return write_through_temporary(path, lambda tmp: fig.savefig(tmp, dpi=dpi))


__all__ = [
    "DiskFullError",
    "OutputError",
    "as_if_created",
    "check_writable",
    "disk_full_error",
    "ensure_space",
    "free_space",
    "human_size",
    "is_disk_full",
    "output_folder",
    "read_text",
    "remove_stale_temporaries",
    "save_figure",
    "stale_temporaries",
    "temporary_folder",
    "temporary_sibling",
    "write_atomic",
    "write_json",
    "write_through_temporary",
]
