import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from script_modules import load_script

from lit_gpt.model.gpt import GPT
from lit_gpt.studies.superposition.measure import (
    ablation_matrix,
    effective_tasks_per_head,
    gate_by_task,
    head_ablated,
    heads_per_task,
    last_logits,
    recorded_gates,
    served,
    task_losses,
    tasks_per_head,
)
from lit_gpt.studies.superposition.settings import EVAL_SEED, Study, StudyError
from lit_gpt.studies.superposition.study import train_and_analyse
from lit_gpt.studies.superposition.tasks import latin_rows
from lit_gpt.studies.superposition.train import analyse, summarise, train_model

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "experiments" / "superposition" / "run.py"
TINY = dict(n_tasks=3, n_sources=4, n_filler=5, seq_len=6, n_head=2, head_size=4, n_embd=8)


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(**overrides) -> Study:
    return Study(**{**TINY, **overrides})


def model_of(arm: str, seed: int = 0) -> tuple[GPT, Study]:
    study = tiny()
    torch.manual_seed(seed)
    return GPT(study.model_config(study.dataset(), arm)), study


# ------------------------------------------------------------------------------------------------ data
def test_every_label_follows_the_task_table():
    study = tiny()
    data = study.dataset()
    batch = data.sample(400, torch.Generator().manual_seed(1))
    sources = range(data.first_source, data.first_destination)
    for idx, task, source, pos, target in zip(
        batch.idx.tolist(), batch.task.tolist(), batch.source.tolist(), batch.source_pos.tolist(), batch.target.tolist()
    ):
        context, destination = idx[:-1], idx[-1]
        assert [i for i, token in enumerate(context) if token in sources] == [pos]
        assert context[pos] == data.first_source + source
        assert all(token < data.n_filler for i, token in enumerate(context) if i != pos)
        assert destination == data.first_destination + task
        assert target == data.first_output + int(data.table[task, source])
        assert data.first_output <= target < data.vocab_size
    assert batch.source_pos.max() == study.seq_len - 2 and batch.source_pos.min() == 0  # any earlier position


@pytest.mark.parametrize("n_rows, n", [(1, 2), (3, 4), (5, 5), (8, 8), (4, 11)])
def test_every_two_tasks_send_every_source_to_different_outputs(n_rows, n):
    table = latin_rows(n_rows, n, torch.Generator().manual_seed(n))
    assert table.shape == (n_rows, n)
    for row in table.tolist():
        assert sorted(row) == list(range(n))  # each task is a bijection sources -> outputs
    for a in range(n_rows):
        for b in range(a + 1, n_rows):
            assert all(x != y for x, y in zip(table[a].tolist(), table[b].tolist()))


def test_the_evaluation_set_holds_every_task_source_pair_equally_often():
    data = tiny().dataset()
    batch = data.every_pair(3, torch.Generator().manual_seed(0))
    pairs = {}
    for task, source in zip(batch.task.tolist(), batch.source.tolist()):
        pairs[(task, source)] = pairs.get((task, source), 0) + 1
    assert pairs == {(t, s): 3 for t in range(data.n_tasks) for s in range(data.n_sources)}


def test_the_model_is_one_attention_only_layer_whose_gate_is_the_arm():
    standard, _ = model_of("standard")
    gated, _ = model_of("gated")
    for model in (standard, gated):
        assert len(model.blocks) == 1 and model.blocks[0].mlp is None and model.wpe is None
    assert standard.blocks[0].attn.gate is None
    assert gated.blocks[0].attn.gate.proj.weight.shape == (2, 8)  # one gate per head, from the residual stream


# --------------------------------------------------------------------------------------- the analysis
def by_hand(model: GPT, idx: torch.Tensor, zeroed: int = -1) -> torch.Tensor:
    """Destination logits of a 1-layer attention-only model written out head by head, with head `zeroed`'s
    output replaced by zeros."""
    block, cfg = model.blocks[0], model.config
    rms = lambda x, norm: x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + norm.eps) * norm.weight  # noqa: E731
    x = model.wte.weight[idx]
    h = rms(x, block.norm_1)
    qkv = (h @ block.attn.qkv.weight.T).view(*idx.shape, 3 * cfg.n_head, cfg.head_size)
    T = idx.shape[1]
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    outputs = []
    for head in range(cfg.n_head):
        q, k, v = qkv[:, :, head], qkv[:, :, cfg.n_head + head], qkv[:, :, 2 * cfg.n_head + head]
        scores = (q @ k.transpose(1, 2) / math.sqrt(cfg.head_size)).masked_fill(~causal, float("-inf"))
        y = torch.softmax(scores, dim=-1) @ v
        if block.attn.gate is not None:
            y = y * torch.sigmoid(h @ block.attn.gate.proj.weight[head])[..., None]
        outputs.append(torch.zeros_like(y) if head == zeroed else y)
    x = x + torch.cat(outputs, dim=-1) @ block.attn.proj.weight.T
    return (rms(x, model.norm) @ model.lm_head.weight.T)[:, -1]


@pytest.mark.parametrize("arm", ["standard", "gated"])
@torch.no_grad()
def test_ablating_a_head_equals_zeroing_its_output_by_hand(arm):
    model, study = model_of(arm)
    idx = study.dataset().sample(16, torch.Generator().manual_seed(2)).idx
    torch.testing.assert_close(last_logits(model, idx), by_hand(model, idx), atol=1e-5, rtol=1e-5)
    for head in range(study.n_head):
        with head_ablated(model, head):
            ablated = last_logits(model, idx)
        torch.testing.assert_close(ablated, by_hand(model, idx, zeroed=head), atol=1e-5, rtol=1e-5)
        assert not torch.allclose(ablated, by_hand(model, idx), atol=1e-3)
    torch.testing.assert_close(last_logits(model, idx), by_hand(model, idx), atol=1e-5, rtol=1e-5)  # hook removed


@torch.no_grad()
def test_the_gate_scales_each_head_by_its_own_scalar():
    model, study = model_of("gated")
    idx = study.dataset().sample(8, torch.Generator().manual_seed(3)).idx
    attn = model.blocks[0].attn
    seen = []
    attn.proj.register_forward_pre_hook(lambda module, args: seen.append(args[0].view(*idx.shape, 2, 4)))
    model(idx)
    attn.gate.proj.weight[1] += torch.randn(8)  # move head 1's gate only
    model(idx)
    before, after = seen
    torch.testing.assert_close(after[:, :, 0], before[:, :, 0], atol=0, rtol=0)
    ratio = after[:, :, 1] / before[:, :, 1]  # one factor per (sequence, position), the same on every channel
    torch.testing.assert_close(ratio, ratio[..., :1].expand_as(ratio), atol=1e-4, rtol=1e-4)
    assert not torch.allclose(ratio, torch.ones_like(ratio))
    with recorded_gates(model) as gates:
        model(idx)
    assert gates[0].shape == (8, study.seq_len, study.n_head)


def test_per_task_loss_and_accuracy_equal_a_loop_over_sequences():
    model, study = model_of("standard")
    batch = study.dataset().sample(64, torch.Generator().manual_seed(4))
    loss, accuracy = task_losses(model, batch, study.n_tasks)
    with torch.no_grad():
        logits = last_logits(model, batch.idx)
    for task in range(study.n_tasks):
        rows = [i for i in range(64) if batch.task[i] == task]
        expected = sum(F.cross_entropy(logits[i], batch.target[i]).item() for i in rows) / len(rows)
        correct = sum(int(logits[i].argmax() == batch.target[i]) for i in rows) / len(rows)
        assert loss[task].item() == pytest.approx(expected, rel=1e-5)
        assert accuracy[task].item() == pytest.approx(correct)


def test_the_ablation_matrix_is_each_tasks_loss_rise_per_ablated_head():
    model, study = model_of("gated")
    batch = study.dataset().sample(64, torch.Generator().manual_seed(5))
    delta = ablation_matrix(model, batch, study.n_tasks)
    assert delta.shape == (study.n_head, study.n_tasks)
    with torch.no_grad():
        clean = F.cross_entropy(by_hand(model, batch.idx), batch.target, reduction="none")
        for head in range(study.n_head):
            rise = F.cross_entropy(by_hand(model, batch.idx, zeroed=head), batch.target, reduction="none") - clean
            for task in range(study.n_tasks):
                assert delta[head, task].item() == pytest.approx(rise[batch.task == task].mean().item(), abs=1e-5)


def test_counts_on_a_hand_made_loss_matrix():
    delta = torch.tensor([[0.5, 0.05, 2.0, 0.1], [0.0, 0.2, -0.3, 0.11], [-0.1, 0.0, 0.0, 0.0], [0.3, 0.3, 0.3, 0.3]])
    assert served(delta, 0.1).tolist() == [
        [True, False, True, False],
        [False, True, False, True],
        [False, False, False, False],
        [True, True, True, True],
    ]
    assert tasks_per_head(delta, 0.1).tolist() == [2, 2, 0, 4]
    assert heads_per_task(delta, 0.1).tolist() == [2, 2, 2, 2]
    assert tasks_per_head(delta, 1.0).tolist() == [1, 0, 0, 0]
    effective = effective_tasks_per_head(delta)
    assert effective[0].item() == pytest.approx(2.65**2 / (0.25 + 0.0025 + 4.0 + 0.01))
    assert effective[1].item() == pytest.approx(0.31**2 / (0.04 + 0.0121))  # the negative rise counts as 0
    assert effective[2].item() == 0.0  # a head that matters for no task
    assert effective[3].item() == pytest.approx(4.0)  # four equal rises


def test_the_summary_averages_each_arm_over_its_seeds():
    def run(arm, seed, loss, accuracy, ablation):
        delta = torch.tensor(ablation)
        return {
            "arm": arm,
            "seed": seed,
            "loss": loss,
            "accuracy": sum(accuracy) / 2,
            "task_accuracy": accuracy,
            "ablation": ablation,
            "steps": 100 * (seed + 1),
            "tasks_per_head": tasks_per_head(delta, 0.1).tolist(),
            "heads_per_task": heads_per_task(delta, 0.1).tolist(),
            "effective_tasks_per_head": effective_tasks_per_head(delta).tolist(),
        }

    runs = [
        run("standard", 0, 0.2, [1.0, 0.5], [[0.5, 0.5], [0.05, 2.0]]),
        run("standard", 1, 0.4, [1.0, 1.0], [[0.5, 0.0], [0.0, 0.5]]),
        run("gated", 0, 0.3, [0.0, 1.0], [[0.0, 0.0], [0.0, 0.0]]),
    ]
    summary = summarise(runs, ["standard", "gated"], 0.1)
    standard = summary["standard"]
    assert standard["loss"] == pytest.approx((0.3, 0.1))
    assert standard["worst_task_accuracy"] == pytest.approx((0.75, 0.25))
    assert standard["tasks_per_head"] == pytest.approx((1.25, 0.25))  # heads serve (2, 1) and (1, 1) tasks
    assert standard["heads_per_task"] == pytest.approx((1.25, 0.25))
    assert standard["steps"] == pytest.approx((150, 50))
    assert standard["task_accuracy"] == pytest.approx([1.0, 0.75])
    assert standard["tasks_per_head_at"]["1.0"] == pytest.approx((0.25, 0.25))  # only the 2.0 rise counts
    assert summary["gated"]["tasks_per_head"] == (0.0, 0.0) and summary["gated"]["effective_tasks_per_head"][0] == 0


def test_gate_values_by_task_average_each_heads_gate_at_the_destination():
    model, study = model_of("gated")
    batch = study.dataset().sample(32, torch.Generator().manual_seed(6))
    table = gate_by_task(model, batch, study.n_tasks)
    with torch.no_grad():
        h = model.blocks[0].norm_1(model.wte(batch.idx[:, -1]))
        gates = torch.sigmoid(h @ model.blocks[0].attn.gate.proj.weight.T)
    for task in range(study.n_tasks):
        torch.testing.assert_close(table[:, task], gates[batch.task == task].mean(0))
    with pytest.raises(StudyError, match="no per-head output gate"):
        gate_by_task(model_of("standard")[0], batch, study.n_tasks)


# ------------------------------------------------------------------------------------------ training
def test_training_learns_the_tasks_and_the_penalty_closes_the_gates():
    study = tiny(steps=150, target_loss=None, gate_l1=1.0, eval_every=50, batch_size=64)
    data = study.dataset()
    eval_batch = data.every_pair(4, torch.Generator().manual_seed(0))
    chance = math.log(data.vocab_size)
    model, log = train_model(study, data, "standard", 0, eval_batch)
    assert log["steps"] == 150 and [step for step, _ in log["curve"]] == [50, 100, 150]
    assert log["curve"][-1][1] < 0.5 * chance
    gates = {}
    for arm in ("gated", "gated_l1"):
        model, _ = train_model(study, data, arm, 0, eval_batch)
        gates[arm] = gate_by_task(model, eval_batch, data.n_tasks).mean().item()
    assert gates["gated_l1"] < gates["gated"]


def test_training_stops_at_the_target_loss():
    study = tiny(steps=2000, target_loss=0.5, eval_every=10, batch_size=64)
    data = study.dataset()
    eval_batch = data.every_pair(4, torch.Generator().manual_seed(0))
    model, log = train_model(study, data, "gated", 0, eval_batch)
    assert log["reached_target"] and log["steps"] < 2000
    assert log["curve"][-1][1] <= 0.5 < log["curve"][-2][1]
    assert task_losses(model, eval_batch, data.n_tasks)[0].mean().item() == pytest.approx(log["curve"][-1][1])


# --------------------------------------------------------------------------------------- determinism
def without_timing(run: dict) -> dict:
    return {key: value for key, value in run.items() if key != "train_seconds"}


def test_a_seed_run_alone_equals_its_row_of_the_sweep():
    study = tiny(
        seeds=2, arms=["standard", "gated_l1"], steps=60, target_loss=None, eval_every=20, batch_size=32, eval_repeats=2
    )
    _, sweep, _ = train_and_analyse(study, log=lambda line: None)
    data = study.dataset()
    eval_batch = data.every_pair(study.eval_repeats, torch.Generator().manual_seed(EVAL_SEED))
    torch.rand(1000)  # the process's global generator somewhere else in its stream than in the sweep
    model, training = train_model(study, data, "gated_l1", 1, eval_batch)
    alone = {"arm": "gated_l1", "seed": 1, **training, **analyse(model, study, data, "gated_l1", eval_batch)}
    assert without_timing(alone) == without_timing(sweep[-1])


def test_training_leaves_the_callers_random_stream_where_it_was():
    study = tiny(steps=5, target_loss=None, batch_size=8)
    data = study.dataset()
    eval_batch = data.every_pair(1, torch.Generator().manual_seed(0))
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    train_model(study, data, "gated", 0, eval_batch)
    assert torch.equal(torch.rand(3), expected)


def test_the_sweep_runs_on_the_studys_thread_count_and_records_it():
    torch.set_num_threads(2)  # the caller's count; the fixture restores the suite's afterwards
    study = tiny(seeds=1, arms=["standard"], steps=5, target_loss=None, batch_size=8, eval_repeats=1)
    _, _, environment = train_and_analyse(study, log=lambda line: None)
    assert environment["threads"] == study.threads == 1
    assert environment["torch"] == torch.__version__ and environment["cpu_capability"]
    assert torch.get_num_threads() == 2


# ------------------------------------------------------------------------------------- settings, CLI
@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(n_head=4), "--n_head=4 is more than --n_tasks=3"),
        (dict(n_sources=2), "--n_sources=2 is less than --n_tasks=3"),
        (dict(n_tasks=1, n_head=1, n_sources=1), "--n_sources must be at least 2"),
        (dict(n_embd=-8), "--n_embd must be a positive number, got -8"),
        (dict(seeds=0), "--seeds must be a positive number, got 0"),
        (dict(seq_len=1), "--seq_len must be at least 2"),
        (dict(target_loss=0.0), "--target_loss must be positive"),
        (dict(weight_decay=-0.1), "--weight_decay must be >= 0"),
        (dict(arms=["standard", "gates"]), "--arms must list distinct arms among standard, gated, gated_l1"),
        (dict(arms=[]), "--arms must list distinct arms"),
        (dict(gate_l1=0.0), "gated_l1 with --gate_l1 0"),
    ],
)
def test_settings_that_cannot_mean_what_they_say_are_refused(overrides, message):
    with pytest.raises(StudyError, match=message):
        tiny(**overrides)


def load_run():
    return load_script(RUN, "superposition_run")


@pytest.mark.parametrize(
    "args, status, message",
    [
        (["--n_head", "9"], 1, "error: --n_head=9 is more than --n_tasks=8"),
        (["--n_head", "two"], 2, "error: --n_head: expected int, got 'two'"),
        (["--seeds", "-1"], 1, "error: --seeds must be a positive number, got -1"),
    ],
)
def test_bad_flags_end_in_one_error_line(args, status, message, capsys):
    with pytest.raises(SystemExit) as stop:
        load_run().main(args)
    assert stop.value.code == status
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1


def test_an_output_folder_that_cannot_be_created_is_one_error_line_before_any_training(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit) as stop:
        load_run().main(["--out", str(tmp_path / "file" / "results")])
    assert stop.value.code == 1
    assert capsys.readouterr().err.startswith(f"error: {tmp_path / 'file' / 'results'} (or a parent of it) is a file")


@pytest.mark.slow
def test_one_command_writes_the_tables_json_and_plots(tmp_path):
    out = tmp_path / "results"
    args = [f"--{key}={value}" for key, value in TINY.items()]
    completed = subprocess.run(
        [
            sys.executable,
            str(RUN),
            *args,
            "--seeds=2",
            "--steps=40",
            "--eval_every=20",
            "--eval_repeats=2",
            f"--out={out}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert completed.returncode == 0, completed.stderr
    for name in ("assignment.png", "tasks_per_head.png", "gates.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = json.loads((out / "results.json").read_text())
    assert result["numerics"]["threads"] == 1 and result["numerics"]["torch"] == torch.__version__
    assert [(run["arm"], run["seed"]) for run in result["runs"]] == [
        (arm, seed) for seed in (0, 1) for arm in ("standard", "gated", "gated_l1")
    ]
    for run in result["runs"]:
        delta = torch.tensor(run["ablation"])
        assert delta.shape == (2, 3)
        assert run["tasks_per_head"] == tasks_per_head(delta, 0.1).tolist()
        assert len(run["task_accuracy"]) == 3 and ("gate" in run) == (run["arm"] != "standard")
    table = (out / "results.md").read_text()
    for arm in ("standard", "gated", "gated_l1"):
        mean = result["summary"][arm]["tasks_per_head"][0]
        assert f"| {arm} | " in table and f"{mean:.2f} ±" in table
    assert "![task-to-head assignment](assignment.png)" in table
