"""bench/train.py: the race against litgpt runs every contender through the same step and prints one row
each, and without litgpt says how to add it and stops; the profile splits a step into kinds of work.
Only the mechanics are checked here -- timings belong in the benchmark's own table, never in tests."""

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
    monkeypatch.setattr(
        sys, "argv", ["train.py", "--vs-litgpt", "--modes", "eager", "--rounds", "1", "--steps", "1", "--warmup", "0"]
    )
    bench.main()
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "eager" in line]
    assert [row.split("|")[1].strip() for row in rows] == ["litgpt", "ours softmax", "ours sigmoid"]


def test_the_profile_splits_a_step_into_kinds_of_work_that_add_up(monkeypatch, capsys):
    bench = load_bench()
    monkeypatch.setattr(
        sys, "argv", ["train.py", "--profile", "--variants", "softmax", "--steps", "1", "--warmup", "0"]
    )
    bench.main()
    header, _, row = capsys.readouterr().out.strip().splitlines()
    assert header.count("|") == row.count("|") == len(bench.OP_KINDS) + 4
    cells = [cell.strip() for cell in row.split("|")[1:-1]]
    assert cells[0] == "softmax"
    milliseconds = [float(cell.split(" ms")[0]) for cell in cells[1:-1]]
    assert milliseconds[0] > 0 and milliseconds[1] > 0  # the matrix products and the SDPA kernel were seen
    assert sum(milliseconds) == pytest.approx(float(cells[-1]), abs=len(milliseconds))


def test_ops_are_sorted_into_their_kind():
    bench = load_bench()
    kinds = [kind for kind, _ in bench.OP_KINDS]
    assert bench.op_kind("aten::mm") == bench.op_kind("aten::bmm") == kinds[0]
    assert bench.op_kind("aten::_scaled_dot_product_flash_attention_for_cpu_backward") == kinds[1]
    assert bench.op_kind("## Call CompiledFxGraph fabc123 ##") == kinds[2]
    assert bench.op_kind("aten::sigmoid") == bench.OTHER_OPS
