"""Outputs are written whole or not at all, and a path that cannot take one is a clear error."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

import lit_gpt.files as files  # noqa: E402
from lit_gpt.files import OutputError, output_folder, save_figure, write_atomic, write_json  # noqa: E402


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
    with pytest.raises(OutputError, match=r"cannot create .*/" + "x" * 300 + r" \(File name too long\); choose another"):
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
