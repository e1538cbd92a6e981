"""Outputs are written whole or not at all, and a path that cannot take one is a clear error."""

import matplotlib.pyplot as plt
import pytest

import lit_gpt.core.files as files
from lit_gpt.core.files import OutputError, output_folder, save_figure, write_atomic, write_json


def test_writes_create_folders_and_replace_whole_files(tmp_path):
    path = write_atomic(tmp_path / "a" / "b" / "out.md", "one\n")
    assert path.read_text() == "one\n"
    write_json(path, {"x": 1})
    assert path.read_text() == '{\n "x": 1\n}\n'
    assert sorted(p.name for p in path.parent.iterdir()) == ["out.md"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = write_atomic(tmp_path / "out.txt", "complete")

    def disk_full(src, dst):
        raise OSError("No space left on device")

    monkeypatch.setattr(files.os, "replace", disk_full)
    with pytest.raises(OSError, match="No space"):
        write_atomic(path, "partial")
    assert path.read_text() == "complete" and [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_paths_that_cannot_take_the_output_are_refused(tmp_path):
    (tmp_path / "file").write_text("user data")
    with pytest.raises(OutputError, match="is a file, not a folder"):
        output_folder(tmp_path / "file" / "plots")
    with pytest.raises(OutputError, match="is a folder; give a file name"):
        write_atomic(tmp_path, "x")
    fig = plt.figure()
    with pytest.raises(OutputError, match="is a file, not a folder"):
        save_figure(fig, tmp_path / "file" / "plot.png")
    assert (tmp_path / "file").read_text() == "user data"
    assert save_figure(fig, tmp_path / "plot.png").read_bytes().startswith(b"\x89PNG")
    plt.close(fig)


def test_a_folder_that_cannot_be_made_or_written_into_is_refused_in_one_line(tmp_path, monkeypatch):
    with pytest.raises(
        OutputError, match=r"cannot create .*/" + "x" * 300 + r" \(File name too long\); choose another"
    ):
        output_folder(tmp_path / ("x" * 300))
    monkeypatch.setattr(files.os, "access", lambda path, mode: False)  # root may write anywhere: pretend not
    with pytest.raises(OutputError, match=f"no permission to write into {tmp_path}; choose another output folder"):
        output_folder(tmp_path)


def test_outputs_get_the_permissions_of_an_ordinary_file_under_the_umask(tmp_path):
    import os

    previous = os.umask(0o022)
    try:
        text = write_atomic(tmp_path / "report.md", "x")
        fig = plt.figure()
        image = save_figure(fig, tmp_path / "plot.png")
        plt.close(fig)
    finally:
        os.umask(previous)
    assert oct(text.stat().st_mode & 0o777) == oct(image.stat().st_mode & 0o777) == "0o644"


def _only_file(folder):
    return sorted(p.name for p in folder.iterdir())


def test_a_full_disk_is_one_line_naming_the_path_and_the_space_and_keeps_the_old_file(small_disk):
    disk = small_disk("64k")
    path = write_atomic(disk / "report.md", "complete\n")
    with pytest.raises(
        files.DiskFullError,
        match=rf"^no space left on the disk of {path}: it needs about 1\.0 MB and "
        r"[\d.]+ kB are free; free some space or write elsewhere",
    ):
        write_atomic(path, "x" * 1_000_000)
    assert path.read_text() == "complete\n" and _only_file(disk) == ["report.md"]
    big = plt.figure(figsize=(40, 40))
    big.gca().imshow(__import__("numpy").random.default_rng(0).random((400, 400)))
    with pytest.raises(
        files.DiskFullError, match=rf"^no space left on the disk of {disk}/plot.png: [\d.]+ kB are free"
    ):
        save_figure(big, disk / "plot.png")
    plt.close(big)
    assert _only_file(disk) == ["report.md"]


def test_a_write_that_runs_out_of_room_midway_is_the_same_error(tmp_path, monkeypatch):
    import errno

    path = write_atomic(tmp_path / "out.json", "{}")

    def no_room(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.Path, "write_bytes", no_room)
    with pytest.raises(files.DiskFullError, match=f"no space left on the disk of {path}: it needs about 24 B and "):
        write_json(path, {"a": [1, 2]})
    monkeypatch.undo()
    assert path.read_text() == "{}" and _only_file(tmp_path) == ["out.json"]


def test_temporaries_of_killed_writers_are_removed_by_the_next_write_and_live_ones_kept(tmp_path):
    import os
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".out.md.{dead.stdout.strip()}.ab12cd_x.tmp"
    live = tmp_path / f".out.md.{os.getppid()}.zz99yy_q.tmp"
    other = tmp_path / f".other.md.{dead.stdout.strip()}.ab12cd_x.tmp"
    for path in (stale, live, other):
        path.write_text("partial")
    write_atomic(tmp_path / "out.md", "x")
    assert _only_file(tmp_path) == sorted([live.name, other.name, "out.md"])
