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
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from pathlib import Path
from typing import Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from lit_gpt.analysis import activation_ratios, peak_activation_ratio  # noqa: E402
from lit_gpt.checkpoint import find_latest, load_model  # noqa: E402
from lit_gpt.data.probe import load_probe_windows  # noqa: E402
from lit_gpt.evaluation import EvalError, evaluate_run, tokenizer_for, train_args  # noqa: E402
from lit_gpt.files import write_atomic, write_json  # noqa: E402
from lit_gpt.logging_utils import read_metrics  # noqa: E402
from lit_gpt.plots import save_and_close  # noqa: E402

COLUMNS = ("run", "variant", "sink_1", "sink_star", "valid_loss", "probe_loss", "massive_ratio", "massive_layer",
           "tokens_seen", "step")
HEADERS = {"run": "run", "variant": "variant", "sink_1": "Sink_1 (%)", "sink_star": "Sink* (%)",
           "valid_loss": "valid loss", "probe_loss": "probe loss", "massive_ratio": "max top-1/median",
           "massive_layer": "at layer", "tokens_seen": "tokens seen", "step": "step"}
ACTIVATION_STATS = ("top1", "top2", "top3", "median")


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


def cached_evaluation(ckpt_path: Path, probe: Path, tokenizer: Optional[str] = None, eps: float = 0.3,
                      n_sequences: int = 100, length: int = 64) -> dict:
    """The sink evaluation of a checkpoint, from `<checkpoint>.sink.json` when it matches, else computed and cached."""
    cache = ckpt_path.with_name(ckpt_path.name + ".sink.json")
    # Everything the numbers depend on besides the checkpoint (whose newer file time voids the cache).
    key = {"probe": str(Path(probe).resolve()), "probe_sha256": file_digest(probe), "eps": eps,
           "n_sequences": n_sequences, "length": length,
           "tokenizer": str(Path(tokenizer).resolve()) if tokenizer else None}
    if cache.is_file() and cache.stat().st_mtime >= ckpt_path.stat().st_mtime:
        try:
            cached = json.loads(cache.read_text(encoding="utf-8"))
        except ValueError:  # a damaged cache is only a lost shortcut: evaluate again and rewrite it
            cached = {}
        if isinstance(cached, dict) and cached.get("report_key") == key:
            return cached
    model, ckpt = load_model(ckpt_path)
    tokens = load_probe_windows(probe, tokenizer_for(train_args(ckpt), tokenizer), length, n_sequences,
                                model.config.vocab_size)
    result = evaluate_run(model, ckpt, tokens, eps)
    result["report_key"] = key
    write_json(cache, result)
    return result


def report_row(path, probe: Path, tokenizer: Optional[str] = None, eps: float = 0.3) -> dict:
    ckpt_path = run_checkpoint(path)
    result = cached_evaluation(ckpt_path, probe, tokenizer, eps)
    run_dir = Path(path) if Path(path).is_dir() else ckpt_path.parent
    rates = result["sink_rates"]
    ratio, layer = peak_activation_ratio(result.get("massive_activations"))
    return {
        "run": run_dir.name,
        "variant": result["variant"],
        "sink_1": rates["sink_1"],
        "sink_star": rates.get("sink_star"),
        "valid_loss": valid_loss(run_dir, result.get("step_count")),
        "probe_loss": result["loss"],
        "massive_ratio": ratio,
        "massive_layer": layer,
        "tokens_seen": result.get("tokens_seen"),
        "step": result.get("step_count"),
        "massive_activations": result.get("massive_activations"),
        "run_dir": run_dir,
    }


def report_rows(paths: Sequence, probe: Path, tokenizer: Optional[str] = None, eps: float = 0.3) -> list[dict]:
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
    """Hidden state 0 is the embedding output; hidden state i > 0 is block i's output."""
    return "embed" if layer == 0 else str(layer)


def table_cell(column: str, value) -> str:
    """A report value as the Markdown and HTML tables show it."""
    return layer_label(value) if column == "massive_layer" and value is not None else _cell(value)


def to_markdown(rows: Sequence[dict]) -> str:
    lines = ["| " + " | ".join(HEADERS[c] for c in COLUMNS) + " |",
             "|" + "|".join("---" for _ in COLUMNS) + "|"]
    lines += ["| " + " | ".join(table_cell(c, row[c]) for c in COLUMNS) + " |" for row in rows]
    return "\n".join(lines)


def massive_activation_tables(rows: Sequence[dict]) -> str:
    """Per run, a Markdown table of the top-1, top-2, top-3 and median |activation| (and top-1 / median)
    of every hidden state, averaged over the probe sequences."""
    parts = ["**Massive activations per layer**: the largest |activation|s and the median one of each hidden "
             "state (embed = embedding output, l = output of block l) over all positions, learned sink tokens "
             "included, mean over probe sequences."]
    for row in rows:
        stats = row.get("massive_activations")
        if not stats:
            parts.append(f"*{row['run']}*: no activation statistics in its evaluation")
            continue
        lines = [f"*{row['run']}* ({row['variant']})", "",
                 "| layer | top-1 | top-2 | top-3 | median | top-1/median |", "|---|---|---|---|---|---|"]
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


__all__ = ["COLUMNS", "bar_chart", "cached_evaluation", "massive_activation_tables",
           "report_markdown", "report_row", "report_rows", "run_checkpoint", "to_markdown", "valid_loss", "write_csv"]
