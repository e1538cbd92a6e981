"""lit_gpt/reporting/sweeps.py's plans and ETAs: a stand-in run says what it trains instead of the paper's run and
for how long before it starts; the demo's ETA comes from its runs' step lines; its follower never waits on
a demo that has gone."""

from test_scripts import REPO

from lit_gpt.cli.sweep import main as experiment_main
from lit_gpt.reporting.sweeps import (
    CPU_EFFICIENCY,
    demo_eta,
    follow,
    load_composed,
    stand_in_plan,
    step_rates,
    training_flops,
)

SIGMOID_1B = REPO / "configs" / "tinyllama_1b_sigmoid.yaml"


def step_line(run: str, step: int, rate: int, mfu: float) -> str:
    """A training line of the demo as the trainer prints it, with the run's prefix."""
    return f"[{run}] step {step}/700 | loss 4.0000 | lr 6.000e-03 | {rate} tok/s | mfu {mfu:.1f}%"


def test_the_1b_script_on_a_cpu_says_it_trains_the_tiny_stand_in_and_for_how_long():
    scaled, paper = load_composed(SIGMOID_1B, "cpu"), load_composed(SIGMOID_1B)
    ten_minutes = training_flops(scaled) / (CPU_EFFICIENCY * 600)
    plan = stand_in_plan(SIGMOID_1B, "cpu", scaled, paper, ten_minutes)
    assert plan.startswith(
        f"{SIGMOID_1B} at scale cpu is a stand-in for the paper's tinyllama_1_1b (1.34B "
        "parameters, 40,000 steps): it trains tiny (1.31M parameters, sigmoid norm:none) "
        "for 700 steps x 8,192 tokens, about 10.0 min at "
    )
    assert plan.endswith("(SCALE=paper runs the paper's setup)")


def test_each_run_is_timed_once_it_has_logged_two_steps():
    lines = [
        (100.0, step_line("softmax", 10, 9000, 40.0)),
        (101.0, "[kv_bias] eval step 0: code_val_loss 6.4 | sink_1 0"),
        (110.0, step_line("kv_bias", 10, 8000, 30.0)),
        (120.0, step_line("softmax", 20, 9100, 41.0)),
        (150.0, step_line("kv_bias", 20, 8100, 31.0)),
    ]
    timed = list(step_rates(lines))
    assert [sorted(runs) for runs in timed] == [[], [], ["softmax"], ["kv_bias", "softmax"]]  # one per step line
    assert timed[-1]["softmax"]["seconds_per_step"] == 2.0 and timed[-1]["kv_bias"]["seconds_per_step"] == 4.0
    assert timed[-1]["kv_bias"]["rate"] == 8100 and timed[-1]["kv_bias"]["step"] == 20


def test_the_eta_waits_for_the_slowest_run_and_counts_the_evaluation_after_training():
    runs = {
        "softmax": {"step": 20, "max": 700, "rate": 9000.0, "mfu": 40.0, "seconds_per_step": 1.0},
        "kv_bias": {"step": 100, "max": 700, "rate": 8000.0, "mfu": 30.0, "seconds_per_step": 2.0},
    }
    line = demo_eta(runs, now=0.0, after_training=60.0, peak=2e11, share=0.5)
    assert line.startswith("ETA: the demo ends in about 21 min (around ")  # kv_bias: 600 steps x 2 s, then 60 s
    assert line.endswith(
        "training in 20; tokens/s softmax 9,000, kv_bias 8,000, together 17,000 = 35% of the "
        "200 GFLOP/s fp32 matmul peak measured before the start"
    )


def test_following_the_progress_log_stops_at_the_stop_line(tmp_path):
    log = tmp_path / "progress.log"
    log.write_text("[softmax] a\n[kv_bias] b\n[demo] done\n[softmax] after\n")
    lines = [line for _, line in follow(log, "[demo] done", alive=lambda: True)]
    assert lines == ["[softmax] a", "[kv_bias] b"]


def test_following_stops_at_the_end_of_the_log_once_the_demo_has_gone(tmp_path):
    log = tmp_path / "progress.log"
    log.write_text("[softmax] a\n[softmax] half a li")
    assert [line for _, line in follow(log, "[demo] done", alive=lambda: False)] == ["[softmax] a"]


def test_the_eta_follower_prints_one_eta_once_every_run_is_timed(tmp_path, capsys):
    log = tmp_path / "progress.log"
    log.write_text("".join(step_line(run, step, 9000, 40.0) + "\n" for step in (10, 20) for run in ("a", "b")))
    experiment_main(
        ["eta", "--log", str(log), "--runs", "2", "--peak_flops", "2e11", "--share", "0.5", "--parent", "0"]
    )  # no process is ever this one's parent 0: the log is all there is
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 1 and printed[0].startswith("ETA: the demo ends in about 1 min")
    assert "together 18,000 = 40% of the 200 GFLOP/s" in printed[0]


def test_the_eta_follower_ends_without_an_eta_when_its_demo_has_gone(tmp_path, capsys):
    log = tmp_path / "progress.log"
    log.write_text(step_line("a", 10, 9000, 40.0) + "\n")
    experiment_main(
        ["eta", "--log", str(log), "--runs", "3", "--peak_flops", "2e11", "--share", "0.3", "--parent", "0"]
    )  # no process is ever this one's parent 0
    assert capsys.readouterr().out == ""
