"""One table over a sweep of runs (the paper's Sink_1 / Sink* / loss tables for your own checkpoints), and each
run's massive activations per layer.

Each run contributes its newest checkpoint (or the checkpoint file given). Its sink evaluation is
cached next to the checkpoint as `<checkpoint>.sink.json` and reused while probe and eps are the same,
so re-running a report after one more run finishes evaluates only that run. The validation loss comes
from the run's `metrics.csv` (mean over validation domains at the checkpoint's step); the probe loss
from the sink evaluation. Massive activations (Sun et al. 2024) are the few hidden-state entries
thousands of times the median where a sink forms: the table gives each run's largest top-1 / median
|activation| over the hidden states and where it is, and `massive_activation_tables` the top-1, top-2,
top-3 and median |activation| of every hidden state.

The cached evaluation also keeps what the report page shows of a run besides numbers: the checkpoint's
training arguments (with its model fields, the settings that tell the runs apart, `differing_settings`)
and the attention maps of its sink layers (`sink_layers`), every head, for the first probe sequence.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import math
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from lit_gpt.core.files import write_atomic, write_json
from lit_gpt.data.probe import load_probe_windows
from lit_gpt.measurement.analysis import activation_ratios, embedding_activation_ratio, peak_activation_ratio
from lit_gpt.measurement.evaluation import EvalError, evaluate_run, example_maps, tokenizer_for, train_args
from lit_gpt.measurement.metrics import LAYER_SERIES, hidden_state_label, normalize_rows
from lit_gpt.measurement.plots import plt, save_and_close
from lit_gpt.measurement.probe_defaults import PROBE_LENGTH, PROBE_SEQUENCES, SINK_EPS
from lit_gpt.measurement.probe_result import ProbeResult, ProbeResultError
from lit_gpt.training.checkpoint import find_latest, load_model
from lit_gpt.training.loggers import read_metrics

COLUMNS = (
    "run",
    "variant",
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
HEADERS = {
    "run": "run",
    "variant": "variant",
    "sink_1": "Sink_1 (%)",
    "sink_star": "Sink* (%)",
    "valid_loss": "valid loss",
    "probe_loss": "probe loss",
    "massive_ratio": "max top-1/median",
    "massive_layer": "at layer",
    "embed_ratio": "embed top-1/median",
    "tokens_seen": "tokens seen",
    "step": "step",
}
ACTIVATION_STATS = ("top1", "top2", "top3", "median")
# What a cached evaluation holds beyond `evaluate_run`'s result (training args, sink-layer attention maps);
# a cache of another format is evaluated again.
CACHE_FORMAT = 2
MAX_SINK_LAYERS = 3
# Training arguments that are no setting of the experiment: the run's name (the table's first column) and the
# model overrides (the model fields they set are compared themselves).
NOT_SETTINGS = ("out_name", "model")


def run_checkpoint(path) -> Path:
    """The checkpoint a report uses for `path`: the file itself, or the newest one in a run folder."""
    path = Path(path)
    if path.is_file():
        return path
    latest = find_latest(path) if path.is_dir() else None
    if latest is None:
        raise EvalError(f"{path} is neither a checkpoint file nor a run folder holding iter-*-ckpt.pth files")
    return latest


def valid_loss(run_dir: Path, step: Optional[int]) -> Optional[float]:
    """Mean validation loss over domains at the last evaluation at or before `step`, from metrics.csv."""
    path = Path(run_dir) / "metrics.csv"
    if not path.is_file():
        return None
    by_step: dict[int, dict[str, float]] = {}
    for row_step, name, value in read_metrics(path):
        if name.endswith("_val_loss") and (step is None or row_step <= step):
            by_step.setdefault(row_step, {})[name] = value
    if not by_step:
        return None
    losses = by_step[max(by_step)]
    return sum(losses.values()) / len(losses)


def file_digest(path: Path) -> Optional[str]:
    """SHA-256 of a file's bytes (None when it is missing: the evaluation then says so)."""
    path = Path(path)
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def cached_evaluation(
    ckpt_path: Path,
    probe: Path,
    tokenizer: Optional[str] = None,
    eps: float = SINK_EPS,
    n_sequences: int = PROBE_SEQUENCES,
    length: int = PROBE_LENGTH,
) -> ProbeResult:
    """The sink evaluation of a checkpoint, from `<checkpoint>.sink.json` when it matches, else computed and cached;
    `about` holds the run's training arguments (`train`), its sink layers' attention maps and the cache key."""
    cache = ckpt_path.with_name(ckpt_path.name + ".sink.json")
    # Everything the numbers depend on besides the checkpoint (whose newer file time voids the cache).
    key = {
        "format": CACHE_FORMAT,
        "probe": str(Path(probe).resolve()),
        "probe_sha256": file_digest(probe),
        "eps": eps,
        "n_sequences": n_sequences,
        "length": length,
        "tokenizer": str(Path(tokenizer).resolve()) if tokenizer else None,
    }
    if cache.is_file() and cache.stat().st_mtime >= ckpt_path.stat().st_mtime:
        try:
            cached = json.loads(cache.read_text(encoding="utf-8"))
        except ValueError:  # a damaged cache is only a lost shortcut: evaluate again and rewrite it
            cached = {}
        if isinstance(cached, dict) and cached.get("report_key") == key:
            try:
                return ProbeResult.from_json(cached)
            except ProbeResultError:  # as damaged: evaluate again
                pass
    model, ckpt = load_model(ckpt_path)
    tokens = load_probe_windows(
        probe, tokenizer_for(train_args(ckpt), tokenizer), length, n_sequences, model.config.vocab_size
    )
    result = evaluate_run(model, ckpt, tokens, eps)
    result.about["train"] = train_args(ckpt)
    layers = sink_layers(result.layer_sink_rates)
    result.about["attention_maps"] = sink_attention(
        example_maps(model, ckpt, tokens), layers, model.config.n_slots, result.n_sink_tokens
    )
    result.about["report_key"] = key
    write_json(cache, result.to_json())
    return result


def sink_layers(layer_rates: dict[str, list[float]]) -> list[int]:
    """The layers (counted from 0) whose attention the report shows: the `MAX_SINK_LAYERS` with the highest
    sink rate above zero, a layer's rate being the largest of its Sink_1, Sink* and Sink_tok (a variant's sink
    may sit in key slots or sink tokens instead of the first token). Without any sink, the first layer, so a
    run without sinks still shows what its attention looks like."""
    per_layer = [max(rates) for rates in zip(*(layer_rates[name] for name in LAYER_SERIES if name in layer_rates))]
    ranked = sorted(range(len(per_layer)), key=lambda layer: -per_layer[layer])  # stable: ties keep layer order
    return sorted(layer for layer in ranked[:MAX_SINK_LAYERS] if per_layer[layer] > 0) or ranked[:1]


def encode_maps(maps: torch.Tensor) -> dict:
    """(heads, queries, keys) maps with values in [0, 1] as 8-bit levels in base64: a 64-token head takes about
    5 KB of the cache, a tenth of it as indented JSON numbers, and 1/255 is finer than a colour scale shows."""
    levels = (maps.clamp(0, 1) * 255).round().to(torch.uint8).contiguous()
    return {"shape": list(levels.shape), "uint8": base64.b64encode(levels.numpy().tobytes()).decode("ascii")}


def decode_maps(encoded: dict) -> np.ndarray:
    """`encode_maps`' inverse, as floats in [0, 1]."""
    levels = np.frombuffer(base64.b64decode(encoded["uint8"]), dtype=np.uint8)
    return levels.reshape(encoded["shape"]) / 255.0


def sink_attention(maps: Sequence[torch.Tensor], layers: Sequence[int], n_slots: int, n_sink_tokens: int) -> dict:
    """Every head of `layers` in the first sequence's maps (per layer (B, H, T, C)), rows normalised as the sink
    metric sees them; `n_slots + n_sink_tokens` columns come before the real keys."""
    return {
        "layers": list(layers),
        "n_slots": n_slots,
        "n_sink_tokens": n_sink_tokens,
        "maps": [encode_maps(normalize_rows(maps[layer][0]).cpu()) for layer in layers],
    }


def run_settings(row: dict) -> dict:
    """A row's model fields and training arguments in one mapping (their names do not overlap)."""
    train = {key: value for key, value in (row.get("train") or {}).items() if key not in NOT_SETTINGS}
    return {**(row.get("config") or {}), **train}


def differing_settings(rows: Sequence[dict]) -> list[str]:
    """The settings whose values are not the same in every row (a setting a row lacks counts as None): what
    tells the runs apart; none for a single run."""
    settings = [run_settings(row) for row in rows]
    names = dict.fromkeys(name for run in settings for name in run)
    return [
        name for name in names if len({json.dumps(run.get(name), sort_keys=True, default=str) for run in settings}) > 1
    ]


def setting_cell(value) -> str:
    """A setting as the table shows it: JSON for mixtures and lists, `--` for none."""
    if value is None:
        return "--"
    return json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else str(value)


def report_row(path, probe: Path, tokenizer: Optional[str] = None, eps: float = SINK_EPS) -> dict:
    ckpt_path = run_checkpoint(path)
    result = cached_evaluation(ckpt_path, probe, tokenizer, eps)
    run_dir = Path(path) if Path(path).is_dir() else ckpt_path.parent
    rates, about = result.sink_rates, result.about
    ratio, layer = peak_activation_ratio(result.massive_activations)
    return {
        "run": run_dir.name,
        "variant": about["variant"],
        "sink_1": rates["sink_1"],
        "sink_star": rates.get("sink_star"),
        "valid_loss": valid_loss(run_dir, about.get("step_count")),
        "probe_loss": result.loss,
        "massive_ratio": ratio,
        "massive_layer": layer,
        "embed_ratio": embedding_activation_ratio(result.massive_activations),
        "tokens_seen": about.get("tokens_seen"),
        "step": about.get("step_count"),
        "massive_activations": result.massive_activations,
        "layer_sink_rates": result.layer_sink_rates,
        "attention_maps": about.get("attention_maps"),
        "config": about.get("config"),
        "train": about.get("train"),
        "run_dir": run_dir,
    }


def report_rows(paths: Sequence, probe: Path, tokenizer: Optional[str] = None, eps: float = SINK_EPS) -> list[dict]:
    return [report_row(path, probe, tokenizer, eps) for path in paths]


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "--"
    if isinstance(value, float):
        return f"{value:.2f}" if abs(value) >= 10 else f"{value:.3f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def layer_label(layer: int) -> str:
    """Hidden state 0 is the embedding output ("embed"); hidden state i > 0 is the output of layer i - 1
    (layers count from 0, `hidden_state_label`)."""
    return hidden_state_label(layer)


def table_cell(column: str, value) -> str:
    """A report value as the Markdown and HTML tables show it (the peak's layer counts from 0, a block)."""
    return str(value) if column == "massive_layer" and value is not None else _cell(value)


def to_markdown(rows: Sequence[dict]) -> str:
    lines = ["| " + " | ".join(HEADERS[c] for c in COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    lines += ["| " + " | ".join(table_cell(c, row[c]) for c in COLUMNS) + " |" for row in rows]
    return "\n".join(lines)


def massive_activation_tables(rows: Sequence[dict]) -> str:
    """Per run, a Markdown table of the top-1, top-2, top-3 and median |activation| (and top-1 / median)
    of every hidden state, averaged over the probe sequences."""
    parts = [
        "**Massive activations per layer**: the largest |activation|s and the median one of each hidden "
        "state (embed = embedding output, l = output of layer l, counted from 0) over all positions, learned sink tokens "
        "included, mean over probe sequences."
    ]
    for row in rows:
        stats = row.get("massive_activations")
        if not stats:
            parts.append(f"*{row['run']}*: no activation statistics in its evaluation")
            continue
        lines = [
            f"*{row['run']}* ({row['variant']})",
            "",
            "| layer | top-1 | top-2 | top-3 | median | top-1/median |",
            "|---|---|---|---|---|---|",
        ]
        ratios = activation_ratios(stats)
        for layer, values in enumerate(zip(*(stats[name] for name in ACTIVATION_STATS))):
            ratio = "--" if ratios[layer] is None else f"{ratios[layer]:.1f}"
            lines.append(f"| {layer_label(layer)} | " + " | ".join(map(_cell, values)) + f" | {ratio} |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def report_markdown(rows: Sequence[dict]) -> str:
    """report.md: the sweep table, then each run's massive activations per layer."""
    return to_markdown(rows) + "\n\n" + massive_activation_tables(rows)


def write_csv(rows: Sequence[dict], path: Path) -> Path:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({c: ("" if row[c] is None else row[c]) for c in COLUMNS} for row in rows)
    return write_atomic(path, text.getvalue())


def bar_chart(rows: Sequence[dict], path: Path) -> Path:
    """Sink_1 and (where a run has key slots) Sink* per run, side by side."""
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(rows) + 2), 3.8))
    positions = range(len(rows))
    width = 0.4
    ax.bar([p - width / 2 for p in positions], [row["sink_1"] for row in rows], width, label="Sink_1")
    ax.bar([p + width / 2 for p in positions], [row["sink_star"] or 0.0 for row in rows], width, label="Sink*")
    ax.set_xticks(list(positions), [row["run"] for row in rows], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("sink rate (%)")
    ax.set_ylim(0, 100)
    ax.legend()
    return save_and_close(fig, path)


__all__ = [
    "COLUMNS",
    "bar_chart",
    "cached_evaluation",
    "decode_maps",
    "differing_settings",
    "encode_maps",
    "massive_activation_tables",
    "report_markdown",
    "report_row",
    "report_rows",
    "run_checkpoint",
    "run_settings",
    "setting_cell",
    "sink_attention",
    "sink_layers",
    "to_markdown",
    "valid_loss",
    "write_csv",
]
