"""The reproduction grid's bookkeeping (`lit_gpt.reporting.reproduction`, `sink-reproduce`): which runs are finished,
and the tables of docs/reproduction.md built from the runs' evaluations."""

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from test_scripts import REPO, SCRIPTS, build_small_embedded, script_env

from lit_gpt.cli.reproduce import main
from lit_gpt.reporting.reproduction import EFFECTS, GRID, NOT_RUN, load_results, plan, render
from lit_gpt.reporting.sweeps import results_block

ROOT = Path(__file__).resolve().parents[1]


def costs() -> dict:
    return {
        "kurtosis": {"value": 42.0, "layer": 1},
        "max_abs": {"value": 90.0, "layer": 2},
        "w8a8": {"perplexity_fp32": 20.0, "perplexity_w8a8": 25.0, "ratio": 1.25},
        "streaming": {
            "window": 32,
            "n_tokens": 256,
            "n_sink": 4,
            "positions": "in_cache",
            "perplexity_full": 20.0,
            "perplexity_keep_0": 80.0,
            "perplexity_keep_4": 21.0,
        },
    }


def fake_run(
    root: Path, run: str, sink_1: float, step: int = 2, evaluated_step: int = 2, with_costs: bool = True, **rates: float
) -> Path:
    """A cpu-scale run folder as scripts/reproduce.sh leaves it: checkpoints up to `step`, the one of
    `evaluated_step` evaluated into sink_eval.json, one training piece of 90 s."""
    folder = root / f"{run}_cpu"
    folder.mkdir(parents=True)
    for saved in range(1, step + 1):
        (folder / f"iter-{saved:06d}-ckpt.pth").write_bytes(b"")
    (folder / "run.yaml").write_text(yaml.safe_dump({"max_step": step}))
    result = {
        "eps": 0.3,
        "n_sequences": 100,
        "n_sink_tokens": 0,
        "layer_sink_rates": {"sink_1": [sink_1, sink_1]},
        "layer_mean_alpha": {"sink_1": [0.1, 0.1]},
        "norms": {"hidden": [[1.0], [1.0], [1.0]], "keys": None, "values": None},
        "checkpoint": str(folder / f"iter-{evaluated_step:06d}-ckpt.pth"),
        "step_count": evaluated_step,
        "tokens_seen": 16384,
        "loss": 3.5,
        "sink_rates": {"sink_1": sink_1, **rates},
        "config": {"n_layer": 6, "n_head": 4},
        "massive_activations": {
            "top1": [5.0, 300.0, 40.0],
            "top2": [4.0, 3.0, 2.0],
            "top3": [3.0, 2.0, 1.0],
            "median": [1.0, 2.0, 1.0],
        },
    }
    if with_costs:
        result["costs"] = costs()
    (folder / "sink_eval.json").write_text(json.dumps(result))
    (folder / "train_times.tsv").write_text("2026-12-07T10:00Z\t90\t2 cores\n")
    return folder


def test_a_run_evaluated_under_the_old_streaming_positions_is_evaluated_again(tmp_path):
    folder = fake_run(tmp_path, "repro_softmax_seed42", 18.0)
    assert plan_states(tmp_path)["repro_softmax_seed42"] == "done"
    evaluation = json.loads((folder / "sink_eval.json").read_text())
    del evaluation["costs"]["streaming"]["positions"]  # written before positions were numbered in the cache
    (folder / "sink_eval.json").write_text(json.dumps(evaluation))
    assert plan_states(tmp_path)["repro_softmax_seed42"] == "evaluate"  # evaluated again, not trained again


def plan_states(root: Path, **kwargs) -> dict[str, str]:
    return {line.split()[0]: line.split()[-1] for line in plan(root, "cpu", **kwargs)}


def test_plan_skips_only_runs_evaluated_with_costs_at_their_last_step(tmp_path):
    fake_run(tmp_path, "repro_softmax_seed42", 18.0)
    fake_run(tmp_path, "repro_softmax_seed43", 18.0, with_costs=False)
    fake_run(tmp_path, "repro_kv_bias_seed42", 0.0, step=3, evaluated_step=2)  # trained on after its evaluation
    states = plan_states(tmp_path)
    assert len(states) == sum(len(row.seeds) for row in GRID) == 22
    assert states["repro_softmax_seed42"] == "done"
    # Trained to their last step, evaluated without the costs or at an earlier checkpoint: evaluated again only.
    assert states["repro_softmax_seed43"] == "evaluate" and states["repro_kv_bias_seed42"] == "evaluate"
    assert states["repro_decay5_seed42"] == "todo"
    # A smoke run asked to go further than its checkpoints is not finished: it resumes.
    assert plan_states(tmp_path, names=["softmax"], max_step=4) == {
        "repro_softmax_seed42": "todo",
        "repro_softmax_seed43": "todo",
    }


def test_each_effect_is_judged_against_the_default_with_the_one_head_band(tmp_path):
    fake_run(tmp_path, "repro_softmax_seed42", 18.0)
    fake_run(tmp_path, "repro_softmax_seed43", 20.0)
    fake_run(tmp_path, "repro_sigmoid_no_norm_seed42", 0.5)
    fake_run(tmp_path, "repro_sigmoid_norm_seed42", 22.0)  # 3 points above 19: within one head of 24 (4.17)
    fake_run(tmp_path, "repro_kv_bias_seed42", 1.0, sink_star=70.0)
    doc = render(load_results(tmp_path, "cpu"), "cpu")
    lines = doc.splitlines()

    def line(label: str, metric: str) -> list[str]:
        return [
            cell.strip() for cell in next(row for row in lines if row.startswith(f"| {label} | {metric} |")).split("|")
        ]

    assert line("softmax, sum (the default)", "Sink_1")[5] == "19.00 (18.00-20.00)"
    assert line("sigmoid, none", "Sink_1")[5:8] == ["0.50, 1 of 2 seeds", "down", "yes"]
    assert line("sigmoid, sum", "Sink_1")[5:8] == ["22.00, 1 of 2 seeds", "no change", "**no**"]
    assert line("Q[k*;K], [v*;V]", "Sink*")[5:8] == ["70.00", "up", "yes"]
    assert line("Q[k*;K], [v*;V]", "Sink_1")[5:8] == ["1.00", "down", "yes"]
    assert line("weight decay 5.0", "Sink_1")[5:8] == [NOT_RUN, NOT_RUN, "--"]
    paper_effects = sum(effect.source == "paper" for effect in EFFECTS)
    assert lines[0].startswith(f"**Effects that agree with the paper: 3 of 4 measured ({paper_effects - 4} {NOT_RUN})")
    assert "4.17 percentage points (one head)" in doc
    # The costs of a run: its peak activation ratio (150 on the output of layer 0), kurtosis, W8A8, streaming.
    cost = line("repro_softmax_seed42", "150.0 (0)")
    assert cost[3:8] == ["42.0 (1)", "90.0 (2)", "1.250", "20.00 / 80.00 / 21.00 (window 32)", "3.500"]
    run = next(row for row in lines if row.startswith("| repro_softmax_seed42 | `"))
    assert "iter-000002-ckpt.pth" in run and "| 1.5 |" in run and "2 cores" in run


def test_without_runs_every_row_is_not_yet_run_and_holds_no_number():
    doc = render({}, "cpu")
    rows = [line for line in doc.splitlines() if line.startswith("| ") and not line.startswith(("| row", "| run |"))]
    assert len(rows) == len(EFFECTS) + 2 * 22 + 6  # the effects, costs and runs per run, the default per table
    for line in rows:
        cells = [cell.strip() for cell in line.split("|")]
        assert cells[5 if cells[2].startswith("Sink") else 2] == NOT_RUN
    assert doc.startswith("**Effects that agree with the paper: 0 of 0 measured")


def test_the_doc_command_fills_the_results_block_of_the_doc(tmp_path, capsys):
    fake_run(tmp_path, "repro_softmax_seed42", 18.0)
    start, end = results_block("reproduction cpu")
    doc = tmp_path / "reproduction.md"
    doc.write_text(f"# Reproduction\n\n{start}\nold\n{end}\n\nDiscussion stays.\n")
    main(
        [
            "doc",
            "--checkpoint_root",
            str(tmp_path),
            "--scale",
            "cpu",
            "--doc",
            str(doc),
            "--out",
            str(tmp_path / "tables.md"),
        ]
    )
    text = doc.read_text()
    assert "old" not in text and text.endswith(f"{end}\n\nDiscussion stays.\n")
    assert render(load_results(tmp_path, "cpu"), "cpu") in text
    assert (tmp_path / "tables.md").read_text().strip() in text


def test_an_unknown_row_is_one_line_naming_the_rows(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["plan", "--checkpoint_root", str(tmp_path), "--rows", "[softmax, sigmoid]"])
    assert stop.value.code == 2
    message = capsys.readouterr().err.strip()
    assert message.startswith("error: unknown row sigmoid; the grid has softmax, sigmoid_norm,")
    assert "\n" not in message


def test_docs_reproduction_holds_every_row_and_the_paper_values():
    text = (ROOT / "docs" / "reproduction.md").read_text()
    for row in GRID:
        assert f"`{row.config}`" in text and row.label in text
    for effect in EFFECTS:
        assert effect.reported in text
    start, end = results_block("reproduction cpu")
    assert text.split(start)[1].split(end)[0].strip().startswith("**Effects that agree with the paper:")
    assert "docs/reproduction.md" in (ROOT / "README.md").read_text()


def run_reproduce(env: dict[str, str]) -> str:
    result = subprocess.run(
        ["bash", str(SCRIPTS / "reproduce.sh")], cwd=REPO, env=env, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


@pytest.mark.slow
def test_smoke_grid_trains_evaluates_skips_finished_rows_and_resumes_a_longer_one(tmp_path):
    data, probe = build_small_embedded(tmp_path / "data")
    checkpoints = tmp_path / "checkpoints"
    env = script_env(data, probe, checkpoints, REPRODUCE_SMOKE="1")  # rows softmax (two seeds) and kv_bias
    first = run_reproduce(env)
    runs = ("repro_softmax_seed42", "repro_softmax_seed43", "repro_kv_bias_seed42")
    for run in runs:
        evaluation = json.loads((checkpoints / f"{run}_cpu" / "sink_eval.json").read_text())
        assert evaluation["checkpoint"].endswith("iter-000002-ckpt.pth") and "costs" in evaluation
        assert f"[{run}] block outputs: kurtosis" in first  # each run's lines carry its name
    tables = (checkpoints / "reproduction_cpu.md").read_text()
    assert "**Effects that agree with the paper: " in tables and "2 of 2 measured" not in tables
    kv_sink_star = next(line for line in tables.splitlines() if line.startswith("| Q[k*;K], [v*;V] | Sink* |"))
    assert NOT_RUN not in kv_sink_star  # measured against the default's two seeds
    assert all(f"| {run} | `" in tables for run in runs)

    again = run_reproduce(env)
    assert all(f"skip {run}_cpu: finished and evaluated" in again for run in runs)
    assert "Ran 0 run(s)" in again

    # Asked for more steps, a finished row is an interrupted one: it resumes from its newest checkpoint.
    longer = run_reproduce({**env, "ROWS": "kv_bias", "MAX_STEPS": "3"})
    assert "[repro_kv_bias_seed42] Resuming from" in longer and "iter-000002-ckpt.pth" in longer
    evaluation = json.loads((checkpoints / "repro_kv_bias_seed42_cpu" / "sink_eval.json").read_text())
    assert evaluation["checkpoint"].endswith("iter-000003-ckpt.pth")
    assert len((checkpoints / "repro_kv_bias_seed42_cpu" / "train_times.tsv").read_text().splitlines()) == 2

    # An evaluation of an older format is redone without training: the run's training time stays as it was.
    folder = checkpoints / "repro_kv_bias_seed42_cpu"
    evaluation = json.loads((folder / "sink_eval.json").read_text())
    del evaluation["costs"]["streaming"]["positions"]
    (folder / "sink_eval.json").write_text(json.dumps(evaluation))
    times = (folder / "train_times.tsv").read_text()
    redone = run_reproduce({**env, "ROWS": "kv_bias", "MAX_STEPS": "3"})
    assert "Resuming" not in redone and "[repro_kv_bias_seed42] block outputs: kurtosis" in redone
    assert "positions" in json.loads((folder / "sink_eval.json").read_text())["costs"]["streaming"]
    assert (folder / "train_times.tsv").read_text() == times
