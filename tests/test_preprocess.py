import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

import lit_gpt.data.prepare
from lit_gpt.data.errors import DataError
from lit_gpt.data.prepare import prepare
from lit_gpt.tokenizer import TokenizerError

from data_fixtures import corpus_folder, prepare_tiny, sentences, write_jsonl

ROOT = Path(__file__).resolve().parents[1]


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
    out = prepare(source="jsonl", input_dir=tmp_path / "in", output_dir=tmp_path / "out", vocab_size=300,
                  name_prefix="the_pile_", probe_count=2, probe_path=tmp_path / "probe.jsonl")
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


def test_vocab_larger_than_dtype(tmp_path):
    with pytest.raises(DataError, match="more than dtype uint8 can hold"):
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


def test_cli_prints_one_line_and_fails(tmp_path):
    (tmp_path / "empty").mkdir()
    result = subprocess.run(
        [sys.executable, str(ROOT / "preprocess" / "prepare.py"), "--source", "jsonl", "--input_dir", str(tmp_path / "empty"),
         "--output_dir", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "holds no .jsonl" in result.stderr and str(tmp_path / "empty") in result.stderr


@pytest.mark.slow
def test_embedded_build(tmp_path):
    out = prepare(source="embedded", output_dir=tmp_path / "embedded", vocab_size=512, probe_path=tmp_path / "probe.jsonl")
    meta = json.loads((out / "meta.json").read_text())
    assert {"train_code", "valid_code", "train_docs", "valid_docs"} <= set(meta["datasets"])
    assert sum(info["tokens"] for info in meta["datasets"].values()) > 10_000_000
    from lit_gpt.data import load_probe_windows

    assert load_probe_windows(tmp_path / "probe.jsonl", out).shape == (100, 64)


def test_a_folder_preprocessing_did_not_write_is_never_deleted(tmp_path):
    user = tmp_path / "out"
    user.mkdir()
    (user / "thesis.tex").write_text("years of work")
    with pytest.raises(DataError, match=r"--output_dir .*out holds files preprocessing did not write"):
        prepare_tiny(tmp_path)
    assert (user / "thesis.tex").read_text() == "years of work"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs", "out"]


def test_a_file_at_the_destination_or_a_folder_at_the_probe_path_is_refused(tmp_path):
    (tmp_path / "out").write_text("keep")
    with pytest.raises(DataError, match=r"--output_dir .*out is a file"):
        prepare_tiny(tmp_path)
    assert (tmp_path / "out").read_text() == "keep"
    (tmp_path / "probe").mkdir()
    with pytest.raises(DataError, match=r"--probe_path .*probe is a folder"):
        prepare_tiny(tmp_path, output_dir=tmp_path / "out2", probe_path=tmp_path / "probe")
    assert not (tmp_path / "out2").exists()


def test_rebuilds_replace_only_their_own_folders_and_empty_ones(tmp_path):
    (tmp_path / "out").mkdir()
    out = prepare_tiny(tmp_path)  # an empty folder is fine
    assert json.loads((out / "meta.json").read_text())["written_by"] == "lit_gpt.data.prepare"
    (out / "stale.txt").write_text("left by an earlier build")
    prepare_tiny(tmp_path)  # our own folder: replaced as a whole
    assert not (out / "stale.txt").exists()
    # Sibling names a user may have chosen are never touched by the temporary folders.
    for name in (".out.partial", ".out.previous"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "mine.txt").write_text("mine")
    prepare_tiny(tmp_path)
    assert (tmp_path / ".out.partial" / "mine.txt").exists() and (tmp_path / ".out.previous" / "mine.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.partial", ".out.previous", "docs", "out", "probe.jsonl"]
