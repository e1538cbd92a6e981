"""One owner per output folder: an exclusive lock held for the life of the command that writes there.

Why: two training runs started into the same run folder would both save `iter-*-ckpt.pth` under the
same names and interleave their `metrics.csv`; two builds into one data folder would swap each other's
output away. A command that writes into a folder first takes `fcntl.flock` on a lock file there. The
operating system releases it when the process ends, however it ends (kill -9 included), so a lock is
never stale. A second writer is refused in one line naming the holder; readers (evaluation, reports)
take no lock. The holder removes the lock file as it finishes (while still holding it; a process that
opened the removed file finds that out after locking it and tries again), so only a killed holder
leaves one behind, and that one is simply taken over.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Union

from lit_gpt.core.errors import UserError

LOCK_FILE = ".lock"


class FolderBusyError(UserError):
    """Another live process holds the lock of the folder this command would write into."""


def _holder(fd: int) -> str:
    """What the lock file says of its holder (written when it took the lock)."""
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 400).decode("utf-8", "replace").strip()
    return text or "another process"


@contextmanager
def exclusive(lock_file: Union[str, Path], what: str, hint: str) -> Iterator[Path]:
    """Hold an exclusive lock on `lock_file` (created when missing; its folder must exist) while the block
    runs; `FolderBusyError` "`what` is in use by <holder>; `hint`" when another process holds it."""
    lock_file = Path(lock_file)
    fd = _locked(lock_file, what, hint)
    try:
        os.ftruncate(fd, 0)
        os.write(
            fd, f"process {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}".encode()
        )
        yield lock_file
    finally:
        lock_file.unlink(missing_ok=True)
        os.close(fd)  # closing the last descriptor releases the lock


def _locked(lock_file: Path, what: str, hint: str) -> int:
    """A descriptor of `lock_file` holding its exclusive lock, the file still in place under that name."""
    while True:
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise FolderBusyError(f"{what} is in use by {holder}; {hint}") from None
        if _same_file(fd, lock_file):
            return fd
        os.close(fd)  # its holder removed it as it finished: lock the file that is there now


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


__all__ = ["FolderBusyError", "LOCK_FILE", "exclusive"]
