import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from data_fixtures import corpus_folder, prepare_tiny, refused, sentences, write_jsonl, write_packed

import lit_gpt.data.prepare
from lit_gpt.data.errors import DataError
from lit_gpt.data.prepare import prepare
from lit_gpt.data.probe import select_probe_texts
from lit_gpt.data.tokenizer import TokenizerError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if tokenizing, training or loading a tokenizer starts: refusals must come first."""

    def work(*args, **kwargs):
        raise AssertionError("expensive work started before the refusal")

    for name in ("train_bpe", "load_tokenizer", "fetch_hub_dataset"):
        monkeypatch.setattr(lit_gpt.data.prepare, name, work)
    monkeypatch.setattr(lit_gpt.data.prepare.shards, "write_dataset", work)
    monkeypatch.setattr(lit_gpt.data.prepare.embedded, "write_embedded_corpus", work)


def test_outputs_and_identical_reruns(tmp_path):
    out = prepare_tiny(tmp_path)
    names = {"train_alpha", "train_beta", "train_gamma", "valid_alpha", "valid_beta", "valid_gamma"}
    assert {path.name for path in out.iterdir()} == names | {"tokenizer.json", "meta.json"}
    meta = json.loads((out / "meta.json").read_text())
    assert meta["tokenizer"]["vocab_size"] == 300 and meta["dtype"] == "uint16" and set(meta["datasets"]) == names
    assert len((tmp_path / "probe.jsonl").read_text().splitlines()) == 5
    first = {path.relative_to(out): path.read_bytes() for path in out.rglob("*") if path.is_file()}
    prepare_tiny(tmp_path)
    second = {path.relative_to(out): path.read_bytes() for path in out.rglob("*") if path.is_file()}
    assert first == second
    assert [path.name for path in tmp_path.iterdir() if path.name.startswith(".")] == []


def test_train_valid_subfolders_and_prefix(tmp_path):
    write_jsonl(tmp_path / "in" / "train" / "pile_cc-24-0.jsonl", sentences(0, 30))
    write_jsonl(tmp_path / "in" / "valid" / "pile_cc-24-0.jsonl", sentences(1, 10))
    out = prepare(
        source="jsonl",
        input_dir=tmp_path / "in",
        output_dir=tmp_path / "out",
        vocab_size=300,
        name_prefix="the_pile_",
        probe_count=2,
        probe_path=tmp_path / "probe.jsonl",
    )
    assert (out / "train_the_pile_pile_cc" / "index.json").is_file() and (out / "valid_the_pile_pile_cc").is_dir()


def test_bad_input_leaves_nothing_half_written(tmp_path):
    out = prepare_tiny(tmp_path)
    before = (out / "meta.json").read_bytes()
    docs = corpus_folder(tmp_path / "bad")
    (docs / "beta-1.jsonl").write_bytes(b'{"text": "fine"}\n{"txt": "oops"}\n')
    with pytest.raises(DataError, match="beta-1.jsonl: line 2 has no string 'text'"):
        prepare_tiny(tmp_path, input_dir=docs, tokenizer=str(out / "tokenizer.json"))
    assert (out / "meta.json").read_bytes() == before
    assert [path.name for path in tmp_path.iterdir() if path.name.startswith(".")] == []


def test_vocab_larger_than_dtype(tmp_path, no_work):
    with refused("--vocab_size 300", "more than --dtype uint8 can hold", DataError):
        prepare_tiny(tmp_path, dtype="uint8")
    assert not (tmp_path / "out").exists()


def test_unknown_tokenizer_path(tmp_path):
    with pytest.raises(TokenizerError, match="no/such/tokenizer.json does not exist"):
        prepare_tiny(tmp_path, tokenizer="no/such/tokenizer.json")


def test_hub_offline_fails_fast_naming_alternatives(tmp_path, monkeypatch):
    monkeypatch.setattr(lit_gpt.data.prepare, "hub_reachable", lambda: False)
    start = time.perf_counter()
    with pytest.raises(DataError, match="--source embedded.*--source jsonl"):
        prepare(source="hub", input_dir=tmp_path / "sail", output_dir=tmp_path / "out")
    assert time.perf_counter() - start < 5 and not (tmp_path / "out").exists()


def _foreign_output(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("keep")
    return [], tmp_path / "out"


def _non_utf8_document(tmp_path):
    write_jsonl(tmp_path / "docs" / "a-0.jsonl", sentences(0, 20))
    (tmp_path / "docs" / "b-0.jsonl").write_bytes(b'{"text": "caf\xe9"}\n')
    return [], tmp_path / "docs" / "b-0.jsonl"


def _file_output(tmp_path):
    (tmp_path / "out").write_text("keep")
    return [], tmp_path / "out"


def _damaged_tokenizer(tmp_path):
    (tmp_path / "tok.model").write_bytes(bytes(range(256)))
    return ["--tokenizer", str(tmp_path / "tok.model")], tmp_path / "tok.model"


def _empty_document(tmp_path):
    (tmp_path / "docs" / "a-0.jsonl").write_bytes(b"\n")
    return [], tmp_path / "docs" / "a-0.jsonl"


CLI_CASES = {
    "no documents in the folder": lambda tmp: ([], tmp / "docs"),
    "empty document file": _empty_document,
    "non-UTF-8 document": _non_utf8_document,
    "damaged tokenizer": _damaged_tokenizer,
    "folder it did not write": _foreign_output,
    "a file at --output_dir": _file_output,
    "--dtype that is no integer type": lambda tmp: (["--dtype", "float32"], "--dtype float32"),
}


def _snapshot(folder):
    return {path: path.read_bytes() if path.is_file() else None for path in folder.rglob("*")}


@pytest.mark.parametrize("case", list(CLI_CASES))
def test_cli_prints_one_error_line_and_no_traceback(tmp_path, case):
    (tmp_path / "docs").mkdir()
    extra, culprit = CLI_CASES[case](tmp_path)
    before = _snapshot(tmp_path)
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "preprocess" / "prepare.py"),
            "--source",
            "jsonl",
            "--input_dir",
            str(tmp_path / "docs"),
            "--output_dir",
            str(tmp_path / "out"),
            "--vocab_size",
            "300",
            "--probe_path",
            str(tmp_path / "probe.jsonl"),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(culprit) in lines[0], result.stderr
    assert _snapshot(tmp_path) == before


@pytest.mark.slow
def test_embedded_build(tmp_path):
    out = prepare(
        source="embedded", output_dir=tmp_path / "embedded", vocab_size=512, probe_path=tmp_path / "probe.jsonl"
    )
    meta = json.loads((out / "meta.json").read_text())
    assert {"train_code", "valid_code", "train_docs", "valid_docs"} <= set(meta["datasets"])
    assert sum(info["tokens"] for info in meta["datasets"].values()) > 10_000_000
    from lit_gpt.data import load_probe_windows

    assert load_probe_windows(tmp_path / "probe.jsonl", out).shape == (100, 64)


def test_a_folder_preprocessing_did_not_write_is_never_deleted(tmp_path, no_work):
    user = tmp_path / "out"
    user.mkdir()
    (user / "thesis.tex").write_text("years of work")
    with refused(user, "holds files preprocessing did not write .*choose another --output_dir", DataError):
        prepare_tiny(tmp_path)
    assert (user / "thesis.tex").read_text() == "years of work"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs", "out"]


def test_a_damaged_meta_json_does_not_make_a_folder_ours(tmp_path, no_work):
    (tmp_path / "out").mkdir()
    for meta in ("{bad", '{"datasets": {}}', '{"written_by": "lit_gpt.data.prepare", "datasets": []}'):
        (tmp_path / "out" / "meta.json").write_text(meta)
        with refused(tmp_path / "out", "no meta.json of ours", DataError):
            prepare_tiny(tmp_path)
        assert (tmp_path / "out" / "meta.json").read_text() == meta


@pytest.mark.parametrize("kind", ["file", "symlink to a file"])
def test_a_file_at_the_destination_is_refused(tmp_path, no_work, kind):
    (tmp_path / "file.txt").write_text("keep")
    if kind == "file":
        (tmp_path / "file.txt").rename(tmp_path / "out")
    else:
        (tmp_path / "out").symlink_to(tmp_path / "file.txt")
    with refused("is a file; choose a folder path", error=DataError):
        prepare_tiny(tmp_path)
    assert (tmp_path / "out").read_text() == "keep"


def test_a_folder_at_the_probe_path_is_refused(tmp_path, no_work):
    (tmp_path / "probe").mkdir()
    with refused(tmp_path / "probe", "--probe_path .* is a folder", DataError):
        prepare_tiny(tmp_path, probe_path=tmp_path / "probe")
    assert not (tmp_path / "out").exists() and (tmp_path / "probe").is_dir()


@pytest.mark.parametrize(
    "option, value, culprit",
    [
        ("dtype", "float32", "--dtype float32"),
        ("dtype", "no_such_type", "--dtype no_such_type"),
        ("vocab_size", 256, "--vocab_size 256"),
        ("valid_fraction", 1.0, "--valid_fraction 1.0"),
        ("probe_count", -1, "--probe_count -1"),
    ],
)
def test_bad_options_are_refused_before_any_work(tmp_path, no_work, option, value, culprit):
    with refused(culprit, error=DataError):
        prepare_tiny(tmp_path, **{option: value})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs"]


def test_rebuilds_replace_their_own_folders_and_use_empty_ones(tmp_path):
    (tmp_path / "out").mkdir()
    out = prepare_tiny(tmp_path)  # an empty folder is fine
    assert json.loads((out / "meta.json").read_text())["written_by"] == "lit_gpt.data.prepare"
    shutil.rmtree(out / "valid_beta")
    prepare_tiny(tmp_path)  # our own folder: replaced as a whole
    assert (out / "valid_beta" / "index.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs", "out", "probe.jsonl"]


def test_a_folder_written_before_the_marker_is_still_ours(tmp_path):
    out = prepare_tiny(tmp_path)
    meta = json.loads((out / "meta.json").read_text())
    del meta["written_by"], meta["datasets"]["train_gamma"]  # an older build, with other datasets
    (out / "meta.json").write_text(json.dumps(meta))
    shutil.rmtree(out / "train_gamma")
    prepare_tiny(tmp_path)
    assert json.loads((out / "meta.json").read_text())["written_by"] == "lit_gpt.data.prepare"
    assert (out / "train_gamma").is_dir()


def test_files_added_to_our_folder_are_never_deleted(tmp_path, monkeypatch):
    out = prepare_tiny(tmp_path)
    before = (out / "meta.json").read_bytes()
    (out / "notes.txt").write_text("mine")
    write_packed(out / "train_upstream_0.bin", np.arange(10, dtype=np.uint16))
    with refused(out, r"also holds files it did not write \(notes.txt, train_upstream_0.bin\)", DataError):
        prepare_tiny(tmp_path)
    (out / "notes.txt").unlink()
    (out / "train_upstream_0.bin").unlink()

    def add_file_during_the_build(*args):
        (out / "late.txt").write_text("written while the build ran")
        return select_probe_texts(*args)

    monkeypatch.setattr(lit_gpt.data.prepare, "select_probe_texts", add_file_during_the_build)
    with refused(out, r"did not write \(late.txt\)", DataError):
        prepare_tiny(tmp_path)
    assert (out / "late.txt").exists() and (out / "meta.json").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs", "out", "probe.jsonl"]


def test_temporary_siblings_never_touch_files_of_those_names(tmp_path):
    for name in (".out.partial", ".out.previous"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "mine.txt").write_text("mine")
    prepare_tiny(tmp_path)
    prepare_tiny(tmp_path)
    assert (tmp_path / ".out.partial" / "mine.txt").exists() and (tmp_path / ".out.previous" / "mine.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.partial", ".out.previous", "docs", "out", "probe.jsonl"]


def test_a_symlinked_output_folder_is_rebuilt_where_it_points(tmp_path):
    real = prepare_tiny(tmp_path, output_dir=tmp_path / "real")
    (tmp_path / "out").symlink_to(real)
    (real / "valid_beta" / "index.json").unlink()
    prepare_tiny(tmp_path)
    assert (tmp_path / "out").is_symlink() and (real / "valid_beta" / "index.json").is_file()


def test_the_probe_file_is_replaced_whole_and_may_live_in_the_output(tmp_path):
    (tmp_path / "probe.jsonl").write_text("old\n")
    prepare_tiny(tmp_path)
    assert len((tmp_path / "probe.jsonl").read_text().splitlines()) == 5
    inside = tmp_path / "out" / "probe.jsonl"
    prepare_tiny(tmp_path, probe_path=inside)
    prepare_tiny(tmp_path, probe_path=inside)  # its own probe file does not make the folder foreign
    assert len(inside.read_text().splitlines()) == 5
    assert not [path for path in tmp_path.rglob(".*")]


def test_the_dataset_folder_gets_ordinary_permissions(tmp_path):
    import os

    previous = os.umask(0o022)
    try:
        out = prepare_tiny(tmp_path)
    finally:
        os.umask(previous)
    assert oct(out.stat().st_mode & 0o777) == "0o755"
