"""A folder has one writer at a time; the lock goes with its holder, however the holder ends."""

import os
import signal
import subprocess
import sys
import time

import pytest

from lit_gpt.core.locks import FolderBusyError, exclusive

HOLD = """
import sys, time
from lit_gpt.core.locks import exclusive
with exclusive(sys.argv[1], "folder", "wait"):
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_second_holder_is_refused_naming_the_first_and_the_lock_file_goes_with_the_holder(tmp_path):
    lock = tmp_path / ".lock"
    with exclusive(lock, f"run folder {tmp_path}", "wait for it"):
        with pytest.raises(
            FolderBusyError,
            match=rf"run folder {tmp_path} is in use by process {os.getpid()} on .* "
            r"since .*; wait for it",
        ):
            with exclusive(lock, f"run folder {tmp_path}", "wait for it"):
                pass
        assert lock.is_file()
    assert not lock.exists()
    with exclusive(lock, "folder", "wait"):  # free again
        pass


def test_the_lock_of_a_killed_holder_is_taken_over(tmp_path):
    lock = tmp_path / ".lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(lock)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(FolderBusyError, match=f"process {holder.pid} "):
            with exclusive(lock, "folder", "wait"):
                pass
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
    finally:
        holder.kill()
        holder.wait()
    assert lock.is_file()  # a killed holder cannot remove it, and need not
    started = time.monotonic()
    with exclusive(lock, "folder", "wait"):
        assert f"process {os.getpid()} " in lock.read_text()
    assert time.monotonic() - started < 1
