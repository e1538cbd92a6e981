"""bench/train.py --vs-litgpt: the race runs every contender through the same step and prints one row
each; without litgpt it says how to add it and stops. Only the mechanics are checked here -- timings
belong in the benchmark's own table, never in tests."""

import sys

import pytest

from script_modules import load_script
from test_scripts import REPO


def load_bench():
    return load_script(REPO / "bench" / "train.py", "bench_train")


def test_without_litgpt_the_race_says_how_to_add_it(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "litgpt", None)  # makes `import litgpt...` raise ImportError
    monkeypatch.setattr(sys, "argv", ["train.py", "--vs-litgpt"])
    load_bench().main()
    assert "pip install litgpt" in capsys.readouterr().out


def test_every_contender_trains_through_the_shared_step():
    bench = load_bench()
    model = bench.GPT(bench.Config.from_name("micro", block_size=bench.LENGTH, vocab_size=512))
    before = [p.detach().clone() for p in model.parameters()]
    entry = bench.contender("ours micro", model, compiled=False, warmup=1)
    bench.race([entry], rounds=2, steps=1)
    assert len(entry.times) == 2 and all(t > 0 for t in entry.times)
    assert all(not p.equal(b) for p, b in zip(model.parameters(), before))


def test_the_race_against_litgpt_prints_one_row_per_contender(monkeypatch, capsys):
    pytest.importorskip("litgpt.model", reason="litgpt is optional (pip install litgpt)")
    bench = load_bench()
    monkeypatch.setattr(bench, "RACED", ("softmax", "sigmoid"))
    monkeypatch.setattr(sys, "argv", ["train.py", "--vs-litgpt", "--modes", "eager", "--rounds", "1",
                                      "--steps", "1", "--warmup", "0"])
    bench.main()
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "eager" in line]
    assert [row.split("|")[1].strip() for row in rows] == ["litgpt", "ours softmax", "ours sigmoid"]
