import csv
import json

import pytest
import torch

from lit_gpt.data.tokenizer import train_bpe
from lit_gpt.measurement.analysis import embedding_activation_ratio, peak_activation_ratio
from lit_gpt.measurement.evaluation import EvalError
from lit_gpt.model.config import Config
from lit_gpt.model.gpt import GPT
from lit_gpt.reporting.table import (
    cached_evaluation,
    massive_activation_tables,
    report_markdown,
    report_row,
    run_checkpoint,
    to_markdown,
    valid_loss,
    write_csv,
)

TEXTS = [" ".join(f"word{(i * j) % 13}" for j in range(90)) for i in range(1, 5)]


@pytest.fixture
def run_dir(tmp_path):
    tokenizer = train_bpe(TEXTS, 300, tmp_path / "tokenizer.json")
    folder = tmp_path / "run"
    folder.mkdir()
    torch.manual_seed(0)
    model = GPT(Config.from_name("micro", vocab_size=tokenizer.vocab_size))
    for step in (2, 10):
        torch.save(
            {
                "model": model.state_dict(),
                "config": model.config.asdict(),
                "step_count": step,
                "tokens_seen": step * 100,
                "train": {"tokenizer": str(tokenizer.path)},
            },
            folder / f"iter-{step:06d}-ckpt.pth",
        )
    probe = tmp_path / "probe.jsonl"
    probe.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    return folder, probe


def test_the_newest_checkpoint_of_a_run_is_used(run_dir, tmp_path):
    folder, _ = run_dir
    assert run_checkpoint(folder).name == "iter-000010-ckpt.pth"
    assert run_checkpoint(folder / "iter-000002-ckpt.pth").name == "iter-000002-ckpt.pth"
    with pytest.raises(EvalError, match="neither a checkpoint"):
        run_checkpoint(tmp_path / "nothing")


def test_valid_loss_is_the_domain_mean_at_the_last_eval_before_the_checkpoint(tmp_path):
    assert valid_loss(tmp_path, 10) is None
    (tmp_path / "metrics.csv").write_text(
        "step,metric,value\n5,metric/a_val_loss,6.0\n5,metric/b_val_loss,4.0\n5,metric/sink_1,30.0\n"
        "10,metric/a_val_loss,3.0\n20,metric/a_val_loss,1.0\n"
    )
    assert valid_loss(tmp_path, 9) == 5.0
    assert valid_loss(tmp_path, 10) == 3.0
    assert valid_loss(tmp_path, None) == 1.0


def test_evaluations_are_cached_per_probe_and_eps(run_dir):
    folder, probe = run_dir
    ckpt = run_checkpoint(folder)
    first = cached_evaluation(ckpt, probe, length=32)
    cache = ckpt.with_name(ckpt.name + ".sink.json")
    stamp = cache.stat().st_mtime_ns
    assert cached_evaluation(ckpt, probe, length=32) == first and cache.stat().st_mtime_ns == stamp
    other = cached_evaluation(ckpt, probe, eps=0.1, length=32)
    assert other.eps == 0.1 and cache.stat().st_mtime_ns != stamp


def test_a_cache_without_what_an_evaluation_measures_is_evaluated_again(run_dir):
    folder, probe = run_dir
    ckpt = run_checkpoint(folder)
    first = cached_evaluation(ckpt, probe, length=32)
    cache = ckpt.with_name(ckpt.name + ".sink.json")
    damaged = json.loads(cache.read_text())
    del damaged["sink_rates"]
    cache.write_text(json.dumps(damaged))
    assert cached_evaluation(ckpt, probe, length=32).sink_rates == first.sink_rates
    assert "sink_rates" in json.loads(cache.read_text())


def test_the_cache_is_not_reused_when_the_probe_texts_or_the_tokenizer_change(run_dir, tmp_path):
    folder, probe = run_dir
    ckpt = run_checkpoint(folder)
    first = cached_evaluation(ckpt, probe, length=32)
    probe.write_text("".join(json.dumps({"text": t}) + "\n" for t in reversed(TEXTS[1:])))  # same path, new texts
    changed = cached_evaluation(ckpt, probe, length=32)
    assert changed.n_sequences == 3 and changed.loss != first.loss
    (tmp_path / "other").mkdir()
    tokenizer = train_bpe(TEXTS, 280, tmp_path / "other" / "tokenizer.json")
    again = cached_evaluation(ckpt, probe, tokenizer=str(tokenizer.path), length=32)
    assert (
        again.about["report_key"]["tokenizer"]
        == str(tokenizer.path.resolve())
        != changed.about["report_key"]["tokenizer"]
    )


def test_row_markdown_and_csv(run_dir, tmp_path):
    folder, probe = run_dir
    row = report_row(folder, probe)
    assert (row["run"], row["step"], row["tokens_seen"], row["sink_star"], row["valid_loss"]) == (
        "run",
        10,
        1000,
        None,
        None,
    )
    table = to_markdown([row])
    assert table.splitlines()[2].startswith("| run | softmax norm:sum | ")
    assert "| -- | -- |" in table and "| 1,000 | 10 |" in table
    path = write_csv([row], tmp_path / "out" / "report.csv")
    rows = list(csv.DictReader(open(path)))
    assert rows[0]["run"] == "run" and rows[0]["sink_star"] == "" and float(rows[0]["sink_1"]) == row["sink_1"]


def test_rows_show_the_peak_massive_activation_and_report_md_each_layer(run_dir):
    folder, probe = run_dir
    row = report_row(folder, probe)
    stats = row["massive_activations"]
    ratios = [top / median for top, median in zip(stats["top1"], stats["median"])]
    assert len(ratios) == 3  # embedding output and the two blocks of `micro`
    # the peak over the blocks' outputs, its layer counted from 0; the embedding output in a column of its own
    assert (row["massive_ratio"], row["massive_layer"]) == (max(ratios[1:]), ratios[1:].index(max(ratios[1:])))
    assert row["embed_ratio"] == ratios[0]
    text = report_markdown([row, {**row, "run": "other"}])
    assert text.startswith(to_markdown([row, {**row, "run": "other"}]))
    assert "| max top-1/median | at layer | embed top-1/median |" in text.splitlines()[0]
    per_layer = massive_activation_tables([row])
    assert "| layer | top-1 | top-2 | top-3 | median | top-1/median |" in per_layer
    assert f"| embed | {stats['top1'][0]:.3f} | {stats['top2'][0]:.3f} |" in per_layer
    assert per_layer.count("\n| 1 | ") == 1 and text.count("*run*") == 1 and text.count("*other*") == 1


def test_the_peak_is_over_block_outputs_and_tolerates_missing_statistics():
    stats = {"top1": [4.0, 300.0, 90.0], "top2": [3.0, 2.0, 2.0], "top3": [2.0, 1.0, 1.0], "median": [1.0, 0.5, 0.0]}
    assert peak_activation_ratio(stats) == (600.0, 0)  # the output of layer 0; layer 1's median is 0
    # an embedding with the largest ratio is not the peak (massive-activations measures block outputs only)
    embedding_first = {**stats, "top1": [9000.0, 300.0, 90.0]}
    assert peak_activation_ratio(embedding_first) == (600.0, 0)
    assert embedding_activation_ratio(embedding_first) == 9000.0
    assert peak_activation_ratio(None) == (None, None) and embedding_activation_ratio(None) is None
    row = {"run": "old", "variant": "softmax", "massive_activations": None}
    assert "*old*: no activation statistics" in massive_activation_tables([row])
    table = to_markdown(
        [
            {
                **row,
                **dict.fromkeys(
                    (
                        "sink_1",
                        "sink_star",
                        "valid_loss",
                        "probe_loss",
                        "massive_ratio",
                        "massive_layer",
                        "embed_ratio",
                        "tokens_seen",
                        "step",
                    )
                ),
            }
        ]
    )
    assert table.splitlines()[2] == "| old | softmax |" + " -- |" * 9
