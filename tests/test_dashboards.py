"""Dashboards: what a run logs to wandb (offline) and TensorBoard, read back from the files they write.

wandb runs offline with its caches and settings in the test's folder, so nothing reaches the network or the
home folder. Its `run-<id>.wandb` file is a log of the protobuf records wandb ships (`wandb.proto`), read
here record by record.
"""

import csv
import json
import os
import struct
from pathlib import Path

import pytest
import torch
from test_scripts import build_small_embedded, offline_wandb_env, run_script, script_env
from test_trainer import build_corpus, cli_args

from lit_gpt.cli.report import report
from lit_gpt.core.errors import UserError
from lit_gpt.measurement.plots import layer_history_heatmap
from lit_gpt.model.config import Config
from lit_gpt.training.checkpoint import list_checkpoints
from lit_gpt.training.loggers import (
    CSVMetrics,
    TensorBoardMetrics,
    WandbMetrics,
    dashboard_tags,
    layer_history,
    layer_metric,
    log_images,
    log_summary,
    read_metrics,
)
from lit_gpt.training.run_config import parse_args
from lit_gpt.training.trainer import setup

BLOCK = 32768
N_LAYER = Config.from_name("micro").n_layer


# ------------------------------------------------------------------------------------------ reading back
def wandb_records(path: Path) -> list:
    """Records of a `.wandb` file: a 7-byte header (":W&B", magic, version), then 32 KiB blocks of chunks,
    each a 7-byte header (checksum, length, type: 1 whole, 2 first, 3 middle, 4 last) and its bytes; the
    rest of a block is zeros where it is too short for a chunk header or where the writer flushed."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    records, pending, pos = [], b"", 7
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0:  # zeros to the end of the block (the writer pads a block when it flushes)
            pos += left
            continue
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def read_wandb_run(folder: Path) -> dict:
    """run (the RunRecord: id, group, tags, name), config, history rows and final summary of one offline run
    folder; nested keys (an image's fields) are joined with '/'."""
    (path,) = folder.glob("run-*.wandb")
    out = {"run": None, "config": {}, "history": [], "summary": {}}

    def items(entries):
        return {entry.key or "/".join(entry.nested_key): json.loads(entry.value_json) for entry in entries}

    for record in wandb_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            out["run"] = record.run
        elif kind == "config":
            out["config"].update(items(record.config.update))
        elif kind == "history":
            out["history"].append(items(record.history.item))
        elif kind == "summary":
            out["summary"].update(items(record.summary.update))
    return out


def wandb_segments(run_dir: Path) -> list[Path]:
    """The offline run folders of one run folder, oldest first (one per start of the run)."""
    return sorted((run_dir / "logs" / "wandb").glob("offline-run-*"))


def rows_with(history: list[dict], key: str) -> list[dict]:
    return [row for row in history if key in row]


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return build_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture
def offline_wandb(tmp_path, monkeypatch):
    """wandb offline, its caches in the test's folder, no WANDB_* setting of the caller; its service stops
    after the test."""
    import wandb

    for key in [key for key in os.environ if key.startswith("WANDB_")]:
        monkeypatch.delenv(key)
    for key, value in offline_wandb_env(tmp_path / "wandb_home").items():
        monkeypatch.setenv(key, value)
    yield
    wandb.teardown()


def train(corpus: Path, root: Path, *extra: str) -> Path:
    """A 4-step run of the micro preset evaluated at steps 0, 2, 4 (checkpoints at 2 and 4); its folder."""
    setup(
        parse_args(
            cli_args(corpus, root, "--max_step", "4", "--eval_step_interval", "2", "--save_step_interval", "2", *extra)
        )
    )
    return root / "run"


def resume_after_losing_the_last_checkpoint(corpus: Path, root: Path, *extra: str) -> None:
    """What a run killed after logging step 4 but before its checkpoint does when restarted: resume at 2."""
    list_checkpoints(root / "run")[-1].unlink()
    train(corpus, root, "--resume", "auto", *extra)


# ------------------------------------------------------------------------------------------ wandb
@pytest.mark.slow
def test_a_wandb_run_has_group_tags_per_layer_series_figures_and_summary_and_a_resume_continues_it(
    corpus, tmp_path, offline_wandb, monkeypatch
):
    monkeypatch.setenv("WANDB_RUN_GROUP", "kv_sweep")
    monkeypatch.setenv("WANDB_TAGS", "scale:test")
    kv_bias = ("--logger", "wandb", "--model.k_bias", "true", "--model.v_bias", "true")
    run_dir = train(corpus, tmp_path, *kv_bias)

    (segment,) = wandb_segments(run_dir)
    run = read_wandb_run(segment)
    assert run["run"].run_group == "kv_sweep" and run["run"].display_name == "run"
    assert set(run["run"].tags) == {"softmax", "norm:sum", "k_bias", "v_bias", "model:micro", "scale:test"}
    assert (run_dir / "logs" / "wandb-run-id").read_text().strip() == run["run"].run_id
    assert run["config"]["max_step"] == 4 and run["config"]["model_config"]["k_bias"] is True

    evaluations = rows_with(run["history"], "metric/sink_1")
    assert [row["step"] for row in evaluations] == [0, 2, 4]
    per_layer = {layer_metric(name, layer) for name in ("sink_1", "sink_star") for layer in range(N_LAYER)}
    for row in evaluations:
        assert per_layer <= set(row) and "metric/sink_star" in row and "metric/probe_loss" in row
        assert all(0 <= row[key] <= 100 for key in per_layer)
    figures = rows_with(run["history"], "figures/attention/path")
    assert [row["step"] for row in figures] == [0, 2, 4]
    for row in figures:
        for name in ("attention", "norms", "sink_1_by_layer", "sink_star_by_layer"):
            assert row[f"figures/{name}/format"] == "png"
            assert (segment / "files" / row[f"figures/{name}/path"]).is_file()
    final = evaluations[-1]
    assert run["summary"]["eval_step"] == 4
    for key in ("metric/sink_1", "metric/sink_star", "metric/alpha_val_loss", layer_metric("sink_1", 0)):
        assert run["summary"][key] == pytest.approx(final[key])

    resume_after_losing_the_last_checkpoint(corpus, tmp_path, *kv_bias)
    first, second = wandb_segments(run_dir)
    resumed = read_wandb_run(second)
    assert first == segment and resumed["run"].run_id == run["run"].run_id
    assert resumed["run"].run_group == "kv_sweep"
    assert [row["step"] for row in rows_with(resumed["history"], "metric/train_loss")] == [3, 4]
    assert [row["step"] for row in rows_with(resumed["history"], "figures/sink_1_by_layer/path")] == [4]
    steps, rates = layer_history(read_metrics(run_dir / "metrics.csv"), "sink_1")
    assert steps == [0, 2, 4] and len(rates) == N_LAYER  # the resumed heatmap's history, without duplicates


def test_the_stored_wandb_id_is_continued_only_by_a_resume(tmp_path, offline_wandb):
    first = WandbMetrics(tmp_path, "run", tags=("softmax",))
    first.log_metrics({"metric/sink_1": 12.5, layer_metric("sink_1", 0): 50.0}, step=3)
    log_summary(first, {"metric/sink_1": 12.5})
    first.finalize("success")
    assert (tmp_path / "wandb-run-id").read_text().strip() == first.run_id
    assert WandbMetrics(tmp_path, "run", resume=True).run_id == first.run_id
    assert WandbMetrics(tmp_path, "run").run_id is None  # a fresh start gets a new id when it logs

    (segment,) = (tmp_path / "wandb").glob("offline-run-*")
    run = read_wandb_run(segment)
    assert run["history"][0]["step"] == 3 and run["history"][0]["sink_1_by_layer/layer_00"] == 50.0
    assert run["summary"]["metric/sink_1"] == 12.5


def test_images_go_to_wandb_and_tensorboard_and_nowhere_else(tmp_path, offline_wandb):
    image = layer_history_heatmap([0, 2, 4], [[0.0, 50.0, 100.0], [0.0, 0.0, 10.0]], tmp_path / "heat.png")
    csv_log = CSVMetrics(tmp_path / "csv")
    for logger in (None, csv_log):
        log_images(logger, {"figures/heat": image}, step=2)
        log_summary(logger, {"metric/sink_1": 1.0})
    assert not csv_log.path.exists()

    board = TensorBoardMetrics(tmp_path / "logs")
    log_images(board, {"figures/heat": image}, step=2)
    board.finalize("success")
    events = tensorboard_events(tmp_path / "logs" / "tensorboard")
    assert events.Tags()["images"] == ["figures/heat"]
    assert [event.step for event in events.Images("figures/heat")] == [2]

    wandb_log = WandbMetrics(tmp_path / "logs", "run")
    log_images(wandb_log, {"figures/heat": image}, step=2)
    wandb_log.finalize("success")
    (segment,) = (tmp_path / "logs" / "wandb").glob("offline-run-*")
    (row,) = read_wandb_run(segment)["history"]
    assert row["step"] == 2 and (segment / "files" / row["figures/heat/path"]).read_bytes()[:4] == b"\x89PNG"


def test_layer_history_is_the_per_layer_series_of_metrics_csv(tmp_path):
    log = CSVMetrics(tmp_path)
    log.log_metrics({"metric/sink_1": 5.0, layer_metric("sink_1", 0): 10.0, layer_metric("sink_1", 1): 20.0}, step=0)
    log.log_metrics({"metric/train_loss": 3.0}, step=1)
    log.log_metrics(
        {layer_metric("sink_1", 0): 30.0, layer_metric("sink_1", 1): 40.0, layer_metric("sink_star", 0): 90.0}, step=2
    )
    rows = read_metrics(log.path)
    assert layer_history(rows, "sink_1") == ([0, 2], [[10.0, 30.0], [20.0, 40.0]])
    assert layer_history(rows, "sink_star") == ([2], [[90.0]])
    assert layer_history(rows, "sink_token") == ([], [])


def test_tags_name_the_attention_variant_and_the_preset():
    assert dashboard_tags(Config.from_name("micro", attn_score="sigmoid", attn_normalize="none")) == [
        "sigmoid",
        "norm:none",
        "model:micro",
    ]
    assert "gate:headwise" in dashboard_tags(Config.from_name("micro", attn_gate="headwise"))


# ------------------------------------------------------------------------------------------ TensorBoard
def tensorboard_events(folder: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    return events


@pytest.mark.slow
def test_tensorboard_gets_the_same_figures_and_series_in_one_folder_across_a_resume(corpus, tmp_path):
    run_dir = train(corpus, tmp_path, "--logger", "tensorboard")
    resume_after_losing_the_last_checkpoint(corpus, tmp_path, "--logger", "tensorboard")
    assert [p.name for p in (run_dir / "logs").iterdir()] == ["tensorboard"]
    events = tensorboard_events(run_dir / "logs" / "tensorboard")
    assert set(events.Tags()["images"]) == {"figures/attention", "figures/norms", "figures/sink_1_by_layer"}
    for tag in events.Tags()["images"]:
        assert [event.step for event in events.Images(tag)] == [0, 2, 4]
    for layer in range(N_LAYER):
        assert [event.step for event in events.Scalars(layer_metric("sink_1", layer))] == [0, 2, 4]
    # The resumed run's purge hides what the interrupted one logged after its checkpoint at step 2.
    assert [event.step for event in events.Scalars("metric/train_loss")] == [1, 2, 3, 4]


# ------------------------------------------------------------------------------------------ sweep report
@pytest.fixture
def checkpoint_run(tmp_path, corpus) -> Path:
    """A run folder with one checkpoint the report can evaluate (no training)."""
    folder = tmp_path / "softmax"
    folder.mkdir()
    torch.manual_seed(0)
    from lit_gpt.model.gpt import GPT

    model = GPT(Config.from_name("micro", vocab_size=101))
    torch.save(
        {
            "model": model.state_dict(),
            "config": model.config.asdict(),
            "step_count": 4,
            "tokens_seen": 400,
            "train": {"tokenizer": str(corpus / "tokenizer.json")},
        },
        folder / "iter-000004-ckpt.pth",
    )
    return folder


def test_report_wandb_needs_an_out_folder(checkpoint_run, corpus):
    with pytest.raises(UserError, match="--wandb .* give --out"):
        report([str(checkpoint_run)], corpus / "probe_valid.jsonl", wandb=True)


@pytest.mark.slow
def test_the_report_logs_its_table_and_chart_in_the_sweeps_group(checkpoint_run, corpus, tmp_path, offline_wandb):
    out = tmp_path / "lr_cpu_report"
    for _ in range(2):  # every refresh of the report logs to the same run
        report([str(checkpoint_run)], corpus / "probe_valid.jsonl", out=out, wandb=True)
    segments = sorted((out / "wandb").glob("offline-run-*"))
    runs = [read_wandb_run(segment) for segment in segments]
    assert len(runs) == 2 and runs[0]["run"].run_id == runs[1]["run"].run_id
    run = runs[1]
    assert run["run"].run_group == "lr_cpu" and list(run["run"].tags) == ["report"]
    (row,) = run["history"]
    table = json.loads((segments[1] / "files" / row["report/table/path"]).read_text())
    with open(out / "report.csv") as handle:
        expected = list(csv.DictReader(handle))
    assert [dict(zip(table["columns"], values))["run"] for values in table["data"]] == [r["run"] for r in expected]
    assert table["columns"][:4] == ["run", "variant", "sink_1", "sink_star"]
    assert (segments[1] / "files" / row["report/sink_rates/path"]).is_file()


# ------------------------------------------------------------------------------------------ sweeps
@pytest.mark.slow
def test_a_cpu_sweep_gives_one_offline_wandb_run_per_config_in_the_sweeps_group(tmp_path):
    data, probe = build_small_embedded(tmp_path / "data")
    checkpoints = tmp_path / "checkpoints"
    run_script(
        "sink_removal/run_sink_removal.sh",
        "off_by_one",
        "sink_logit",
        env=script_env(data, probe, checkpoints, REPORT_WANDB="1"),
    )
    for variant, tag in (("off_by_one", "softmax_off_by_one"), ("sink_logit", "sink_logit")):
        (segment,) = wandb_segments(checkpoints / f"tinyllama_60M_{variant}_cpu")
        run = read_wandb_run(segment)
        assert run["run"].display_name == f"tinyllama_60M_{variant}_cpu"
        assert run["run"].run_group == "sink_removal_cpu"
        assert {tag, "softmax", "scale:cpu", "model:tiny"} <= set(run["run"].tags)
        evaluations = rows_with(run["history"], "metric/sink_star")
        assert [row["step"] for row in evaluations] == [0, 2]
        n_layer = Config.from_name("tiny").n_layer
        assert {layer_metric("sink_1", layer) for layer in range(n_layer)} <= set(evaluations[-1])
        figures = rows_with(run["history"], "figures/attention/path")
        assert [row["step"] for row in figures] == [0, 2]
        assert all((segment / "files" / row["figures/sink_star_by_layer/path"]).is_file() for row in figures)
    (report_segment, *_) = sorted((checkpoints / "sink_removal_cpu_report" / "wandb").glob("offline-run-*"))
    assert read_wandb_run(report_segment)["run"].run_group == "sink_removal_cpu"
