"""Preprocessing under faults: signals, a failing worker, a full disk, a tokenizer that cannot encode, what a
killed run left behind, its own outputs among the inputs, and destinations that cannot be written. Each ends
in one line with nothing of the user's lost, no partial output and no process of the command left."""

import errno
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from data_fixtures import corpus_folder, prepare_tiny, refused, sentences, write_jsonl
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import models, pre_tokenizers

import lit_gpt.data.prepare
from lit_gpt.core.errors import Interrupted
from lit_gpt.core.files import DiskFullError, OutputError
from lit_gpt.data import shards
from lit_gpt.data.process_group import run_in_own_group

ROOT = Path(__file__).resolve().parents[1]
PREPARE = [sys.executable, str(ROOT / "preprocess" / "prepare.py"), "--source", "jsonl", "--vocab_size", "300"]


def snapshot(folder: Path) -> dict:
    return {path: path.read_bytes() if path.is_file() else None for path in folder.rglob("*")}


def hidden(folder: Path) -> list[str]:
    """Temporaries a build leaves beside its outputs (`.NAME.<pid>.<random>.partial`, `.tmp`, ...)."""
    return sorted(path.name for path in folder.rglob(".*"))


def session_processes(session: int) -> list[int]:
    """The live processes of a session: a command started in a session of its own, and all it started, orphans
    included (a process group of its own stays in the session)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except (OSError, ValueError):
            continue
        if entry.name.isdigit() and int(fields[3]) == session and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def run_prepare(tmp_path: Path, *extra: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """The command line on `tmp_path/docs`, in a session of its own; fails the test if a process of it outlives it."""
    process = subprocess.Popen(
        [
            *PREPARE,
            "--input_dir",
            str(tmp_path / "docs"),
            "--output_dir",
            str(tmp_path / "out"),
            "--probe_path",
            str(tmp_path / "probe.jsonl"),
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    stdout, stderr = process.communicate(timeout=timeout)
    assert_no_process_left(process.pid)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def assert_no_process_left(session: int) -> None:
    deadline = time.monotonic() + 2  # SIGKILLed processes take a moment to be reaped
    while session_processes(session) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = kill_session(session)
    assert not left, f"processes {left} of the command outlived it"


def kill_session(session: int) -> list[int]:
    """SIGKILL every live process of the session (a test must not leave them behind); the ones it found."""
    left = session_processes(session)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    return left


def assert_one_error_line(result: subprocess.CompletedProcess, culprit, status: int = 1) -> None:
    assert result.returncode == status, result.stderr
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(culprit) in lines[0], result.stderr


@pytest.fixture
def docs(tmp_path) -> Path:
    return corpus_folder(tmp_path / "docs")


# ------------------------------------------------------------------------------------- signals and workers
@pytest.mark.slow
@pytest.mark.parametrize("stop", ["SIGTERM", "Ctrl-C"])
def test_a_stop_mid_build_ends_the_whole_command_at_once_leaving_nothing(tmp_path, stop):
    """Ctrl-C is SIGINT to the terminal's process group: the command's, not the build's of its own."""
    for domain in range(12):  # many datasets: tokenizing lasts long after the first one starts
        write_jsonl(tmp_path / "docs" / f"d{domain:02d}-0.jsonl", sentences(domain, 300))
    (tmp_path / "out").mkdir()
    process = subprocess.Popen(
        [
            *PREPARE,
            "--input_dir",
            str(tmp_path / "docs"),
            "--output_dir",
            str(tmp_path / "out"),
            "--probe_path",
            str(tmp_path / "probe.jsonl"),
            "--num_workers",
            "2",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".out.*.partial/train_*")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, "the build ended before it could be interrupted: give it more documents"
    if stop == "SIGTERM":
        process.send_signal(signal.SIGTERM)
    else:
        os.killpg(process.pid, signal.SIGINT)
    sig = signal.SIGTERM if stop == "SIGTERM" else signal.SIGINT
    start = time.monotonic()
    try:
        _, stderr = process.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        kill_session(process.pid)
        pytest.fail(f"the command was still running 10 s after {stop}")
    assert time.monotonic() - start < 10
    assert_no_process_left(process.pid)
    assert process.returncode == 128 + sig and "Traceback" not in stderr, stderr
    assert stderr.splitlines() == [f"error: interrupted by {sig.name}; nothing of the interrupted work was written"]
    assert (
        hidden(tmp_path) == [] and list((tmp_path / "out").iterdir()) == [] and not (tmp_path / "probe.jsonl").exists()
    )


def test_a_successful_run_prints_no_traceback_and_says_where_it_wrote(tmp_path, docs):
    result = run_prepare(tmp_path, "--probe_count", "5")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "Interrupted" not in result.stderr, result.stderr
    out = (tmp_path / "out").resolve()
    lines = result.stdout.splitlines()
    assert any(
        line.startswith("wrote 6 datasets (") and line.endswith(f"tokenizer and meta.json to {out}") for line in lines
    ), lines
    assert f"wrote 5 probe texts to {tmp_path / 'probe.jsonl'}" in lines and lines[-1].startswith("wrote 5 probe texts")


def _pool_work() -> list[int]:
    """What the embedded corpus does: a process pool, whose exit terminates its workers with SIGTERM."""
    with multiprocessing.get_context("fork").Pool(2) as pool:
        return pool.map(abs, range(-4, 0))


def test_pool_workers_of_the_build_end_quietly_under_the_commands_signal_handler(capfd):
    """The command's SIGTERM handler raises `Interrupted`; the build's pool workers must not inherit it."""

    def raise_interrupted(signum, frame):
        raise Interrupted(signum)

    previous = signal.signal(signal.SIGTERM, raise_interrupted)
    try:
        assert run_in_own_group(_pool_work) == [4, 3, 2, 1]
    finally:
        signal.signal(signal.SIGTERM, previous)
    captured = capfd.readouterr()
    assert "Traceback" not in captured.err and "Interrupted" not in captured.err, captured.err


def test_a_failing_worker_is_one_line_and_replaces_nothing(tmp_path, monkeypatch):
    out = prepare_tiny(tmp_path)
    before = snapshot(tmp_path)

    def crash(*args):
        raise ZeroDivisionError("division by zero in a worker")

    monkeypatch.setattr(shards, "pack_documents", crash)  # the workers are forked: they inherit it
    start = time.monotonic()
    with refused("division by zero in a worker", "a tokenization worker of train_alpha failed.*nothing was replaced"):
        prepare_tiny(tmp_path)
    assert time.monotonic() - start < 60 and snapshot(tmp_path) == before and (out / "meta.json").is_file()


def _unknown_token_missing(path: Path) -> Path:
    """A WordLevel tokenizer whose unknown token is not in its vocabulary: it cannot encode any other word."""
    tokenizer = HFTokenizer(models.WordLevel({"<|endoftext|>": 0, "the": 1, "cat": 2}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.save(str(path))
    return path


def test_a_tokenizer_that_cannot_encode_is_one_line_naming_it(tmp_path, docs):
    tokenizer = _unknown_token_missing(tmp_path / "word.json")
    result = run_prepare(tmp_path, "--tokenizer", str(tokenizer))
    assert_one_error_line(result, f"tokenizer {tokenizer} cannot encode the text")
    assert "unknown token" in result.stderr and hidden(tmp_path) == [] and not (tmp_path / "out").exists()


def test_a_tokenizer_that_cannot_encode_in_a_worker_is_one_line(tmp_path, docs, monkeypatch):
    monkeypatch.setattr(lit_gpt.data.prepare, "_shard_bytes", lambda *args: 0)  # the workers meet it first
    tokenizer = _unknown_token_missing(tmp_path / "word.json")
    with refused(f"tokenizer {tokenizer} cannot encode the text"):
        prepare_tiny(tmp_path, input_dir=docs, tokenizer=str(tokenizer))
    assert hidden(tmp_path) == [] and not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------- full disks
@pytest.mark.parametrize("where", ["tokenizing worker", "build process"])
def test_a_full_disk_is_one_line_naming_the_folder_and_the_room_needed(tmp_path, monkeypatch, where):
    out = prepare_tiny(tmp_path)
    before = snapshot(tmp_path)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    target = (
        (shards, "pack_documents") if where == "tokenizing worker" else (lit_gpt.data.prepare, "select_probe_texts")
    )
    monkeypatch.setattr(*target, full)
    start = time.monotonic()
    with refused(out, r"no space left on the disk of .*: it needs about [\d.]+ [kM]?B and .* are free", DiskFullError):
        prepare_tiny(tmp_path)
    assert time.monotonic() - start < 60 and snapshot(tmp_path) == before


@contextmanager
def tmpfs(folder: Path, size: str, read_only: bool = False):
    """A small tmpfs at `folder`; skips the test where mounting is not allowed (not root, no CAP_SYS_ADMIN)."""
    folder.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True, text=True
    )
    if mounted.returncode:
        pytest.skip(
            f"cannot mount a tmpfs here ({mounted.stderr.strip() or 'mount failed'}); the simulated "
            f"ENOSPC tests cover the same paths"
        )
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


def test_a_real_full_disk_keeps_the_previous_build(tmp_path):
    with tmpfs(tmp_path / "disk", "160k") as disk:
        small = tmp_path / "small"
        write_jsonl(small / "alpha-0.jsonl", sentences(0, 20))
        out = prepare_tiny(tmp_path, input_dir=small, output_dir=disk / "out", probe_path=disk / "probe.jsonl")
        before = snapshot(disk)
        for domain in range(3):
            write_jsonl(tmp_path / "big" / f"d{domain}-0.jsonl", sentences(domain, 1500))
        with refused(out, "no space left on the disk of", DiskFullError):
            prepare_tiny(tmp_path, input_dir=tmp_path / "big", output_dir=out, probe_path=disk / "probe.jsonl")
        assert snapshot(disk) == before and hidden(disk) == []


# ------------------------------------------------------------------------------------- what a killed run left
def _dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_temporaries_of_a_killed_run_are_removed_by_the_next_run(tmp_path):
    dead = _dead_pid()
    partial = tmp_path / f".out.{dead}.x1y2.partial"
    (partial / "train_alpha").mkdir(parents=True)
    (tmp_path / f".probe.jsonl.{dead}.k3j4.tmp").write_text("half a probe")
    alive = subprocess.Popen(["sleep", "60"])
    try:
        running = tmp_path / f".out.{alive.pid}.a1b2.partial"  # another build still writing: left alone
        running.mkdir()
        prepare_tiny(tmp_path)
        assert hidden(tmp_path) == [running.name]
    finally:
        alive.kill()
        alive.wait()
    assert (tmp_path / "out" / "meta.json").is_file()


def test_a_build_set_aside_by_a_killed_swap_is_put_back(tmp_path):
    out = prepare_tiny(tmp_path)
    before = snapshot(out)
    set_aside = tmp_path / f".out.{_dead_pid()}.q9w8.previous"
    out.rename(set_aside)  # killed between its two renames: the old build aside, the new one not in place
    prepare_tiny(tmp_path, probe_count=0)  # puts it back first, then replaces it as its own
    assert hidden(tmp_path) == [] and set(snapshot(out)) == set(before)


# ------------------------------------------------------------------------------------- own outputs
def test_the_probe_file_in_the_input_folder_is_never_read_as_a_document(tmp_path, docs):
    """Whatever its name: the probe file of this build and the one an earlier build recorded."""
    prepare_tiny(tmp_path, probe_path=docs / "alpha-probe.jsonl")
    first = json.loads((tmp_path / "out" / "meta.json").read_text())["datasets"]
    prepare_tiny(tmp_path, probe_path=docs / "alpha-probe.jsonl")
    assert json.loads((tmp_path / "out" / "meta.json").read_text())["datasets"] == first
    prepare_tiny(tmp_path, probe_path=tmp_path / "elsewhere.jsonl")  # the earlier probe stays in docs
    assert json.loads((tmp_path / "out" / "meta.json").read_text())["datasets"] == first


# ------------------------------------------------------------------------------------- destinations
def _no_work(monkeypatch):
    def work(*args, **kwargs):
        raise AssertionError("expensive work started before the refusal")

    monkeypatch.setattr(lit_gpt.data.prepare, "train_bpe", work)
    monkeypatch.setattr(lit_gpt.data.prepare, "run_in_own_group", work)


@pytest.mark.parametrize("what", ["probe file", "probe folder", "output parent"])
def test_an_unwritable_destination_is_refused_before_any_work(tmp_path, docs, monkeypatch, what):
    with tmpfs(tmp_path / "ro", "64k", read_only=True) as read_only:
        _no_work(monkeypatch)
        paths = {
            "probe file": ("probe_path", read_only / "probe.jsonl"),
            "probe folder": ("probe_path", read_only / "new" / "probe.jsonl"),
            "output parent": ("output_dir", read_only / "out"),
        }
        option, path = paths[what]
        with refused(path, "cannot be written: no permission to write into", OutputError):
            prepare_tiny(tmp_path, input_dir=docs, **{option: path})
    assert hidden(tmp_path) == [] and not (tmp_path / "out").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes read-only files; the read-only tmpfs test covers root")
def test_a_read_only_probe_file_is_refused_before_any_work(tmp_path, docs, monkeypatch):
    _no_work(monkeypatch)
    probe = tmp_path / "probe.jsonl"
    probe.write_text("keep\n")
    probe.chmod(0o444)
    with refused(probe, "--probe_path .* is read-only", OutputError):
        prepare_tiny(tmp_path, input_dir=docs)
    assert probe.read_text() == "keep\n" and not (tmp_path / "out").exists()


def test_a_probe_file_that_fails_at_the_end_keeps_the_previous_build(tmp_path, monkeypatch):
    out = prepare_tiny(tmp_path)
    before = snapshot(tmp_path)

    def fails(*args):
        raise OutputError(f"--probe_path {tmp_path / 'probe.jsonl'} cannot be written")

    monkeypatch.setattr(lit_gpt.data.prepare, "write_probe", fails)
    with refused(tmp_path / "probe.jsonl", error=OutputError):
        prepare_tiny(tmp_path, input_dir=corpus_folder(tmp_path / "other"))
    assert {path: data for path, data in snapshot(tmp_path).items() if "other" not in path.parts} == before
    assert (out / "meta.json").is_file() and hidden(tmp_path) == []
