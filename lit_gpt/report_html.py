"""report.html: a sweep's report as one page for a browser, for looking at a sweep without a dashboard service.

The page holds the report table, every run's Sink_1 over training steps in one figure, and per run: its
sink rates and losses over steps (from metrics.csv, the trainer's periodic evaluation), its sink rates
per layer (from the run's sink_eval.json) and massive activations per layer (from the report row), and
links to its files and the PNGs in its plots/ folder.

Why one self-contained file: figures are SVG inlined as data URIs and the page has no script, font or
style sheet outside it, so it opens from the file system with no server and no network. The links are
relative to the page, so they keep working while the page and the run folders keep their places (or
are copied together). Whatever a run lacks yet (no metrics.csv, no sink metrics in it, no
sink_eval.json) is a note on the page in place of its figure.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
from pathlib import Path
from typing import Optional, Sequence
from urllib.parse import quote

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import LogFormatter, MaxNLocator  # noqa: E402

from lit_gpt.analysis import activation_ratios  # noqa: E402
from lit_gpt.evaluation import metric_label  # noqa: E402
from lit_gpt.files import write_atomic  # noqa: E402
from lit_gpt.logging_utils import read_metrics  # noqa: E402
from lit_gpt.metrics import LAYER_SERIES  # noqa: E402
from lit_gpt.report import COLUMNS, HEADERS, layer_label, table_cell  # noqa: E402

SINK_SERIES = {name: metric_label(name) for name in LAYER_SERIES}
LOSS_SERIES = {"train_loss": "train", "valid_loss": "valid (mean over domains)", "probe_loss": "probe"}
RUN_FILES = ("run.yaml", "metrics.csv", "sink_eval.json")
STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1200px; padding: 0 1em; color: #222; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; }
th { background: #f0f0f0; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
section.run { border-top: 1px solid #ccc; margin-top: 1.5em; }
.figures { display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; }
figure { margin: 0; }
figure img { max-width: 100%; }
figcaption, .meta { color: #555; font-size: 0.9em; }
.note { background: #fff6d8; border-left: 4px solid #e0b000; padding: 0.4em 0.8em; }
"""


def svg_uri(fig) -> str:
    """A figure as an SVG data URI (closing the figure): an image that needs no file next to the page."""
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="svg", metadata={"Date": None})
    finally:
        plt.close(fig)
    return "data:image/svg+xml;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def training_series(run_dir: Path) -> Optional[dict[str, list[tuple[int, float]]]]:
    """The run's metrics.csv as name -> [(step, value)], names without `metric/`, plus `valid_loss` (the
    mean over validation domains at each evaluation); None when there is no metrics.csv yet."""
    path = Path(run_dir) / "metrics.csv"
    if not path.is_file():
        return None
    series: dict[str, list[tuple[int, float]]] = {}
    valid: dict[int, list[float]] = {}
    for step, name, value in read_metrics(path):
        name = name.removeprefix("metric/")
        series.setdefault(name, []).append((step, value))
        if name.endswith("_val_loss"):
            valid.setdefault(step, []).append(value)
    if valid:
        series["valid_loss"] = [(step, sum(values) / len(values)) for step, values in sorted(valid.items())]
    return series


def _plot_series(ax, series: dict, names: dict) -> None:
    for name, label in names.items():
        if name in series:
            steps, values = zip(*sorted(series[name]))
            ax.plot(steps, values, marker="o" if len(steps) < 30 else None, markersize=4, label=label)
    ax.set_xlabel("step")
    ax.legend(fontsize=8)


def curves_figure(series: dict) -> Optional[str]:
    """Sink rates (left) and losses (right) over training steps; None when the run has neither."""
    panels = [names for names in (SINK_SERIES, LOSS_SERIES) if any(name in series for name in names)]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.2), squeeze=False)
    for ax, names in zip(axes[0], panels):
        _plot_series(ax, series, names)
        sinks = names is SINK_SERIES
        ax.set_title("sink rates" if sinks else "losses", fontsize=10)
        ax.set_ylabel("sink rate (%)" if sinks else "loss (nats)")
        if sinks:
            ax.set_ylim(bottom=0)
    fig.tight_layout()
    return svg_uri(fig)


def sweep_curves_figure(runs: Sequence[tuple[str, Optional[dict]]]) -> Optional[str]:
    """Sink_1 over training steps, one line per run (Sink* dashed in the same colour where a run has it)."""
    with_sinks = [(name, series) for name, series in runs if series and "sink_1" in series]
    if not with_sinks:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    for name, series in with_sinks:
        steps, values = zip(*sorted(series["sink_1"]))
        (line,) = ax.plot(steps, values, marker="o", markersize=4, label=f"{name} Sink_1")
        if "sink_star" in series:
            steps, values = zip(*sorted(series["sink_star"]))
            ax.plot(steps, values, linestyle="--", color=line.get_color(), label=f"{name} Sink*")
    ax.set_xlabel("step")
    ax.set_ylabel("sink rate (%)")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    return svg_uri(fig)


def layer_sink_figure(evaluation: dict) -> str:
    """Sink_1 (and Sink* / Sink_tok where present) of each layer, grouped bars."""
    rates = evaluation["layer_sink_rates"]
    names = [name for name in SINK_SERIES if name in rates]
    n_layers = len(rates[names[0]])
    width = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.5 * n_layers + 2), 3.2))
    for index, name in enumerate(names):
        ax.bar([layer - 0.4 + width * (index + 0.5) for layer in range(n_layers)], rates[name], width,
               label=SINK_SERIES[name])
    ax.set_xlabel("layer")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(f"sink rate (%), eps={evaluation.get('eps')}")
    ax.set_ylim(0, 100)
    ax.set_title("sink rates per layer", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return svg_uri(fig)


def massive_figure(stats: dict) -> str:
    """Top-1 / median |activation| of each hidden state (log scale): the massive activations of a sink."""
    ratios = [float("nan") if ratio is None else ratio for ratio in activation_ratios(stats)]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.5 * len(ratios) + 2), 3.2))
    ax.bar_label(ax.bar(range(len(ratios)), ratios, color="tab:red"), fmt="%.0f", fontsize=7)
    ax.set_xticks(range(len(ratios)), [layer_label(layer) for layer in range(len(ratios))])
    ax.set_xlabel("hidden state (embed, then block outputs)")
    ax.set_ylabel("top-1 / median |activation|")
    ax.set_yscale("log")
    finite = [ratio for ratio in ratios if math.isfinite(ratio)]
    if finite:  # room above the tallest bar for its label
        ax.set_ylim(top=max(finite) * 1.6)
    ax.yaxis.set_major_formatter(LogFormatter())  # 20 and 50 read better than 2x10^1 and 5x10^1
    ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False))
    ax.set_title("massive activations", fontsize=10)
    fig.tight_layout()
    return svg_uri(fig)


def read_evaluation(run_dir: Path) -> tuple[Optional[dict], Optional[str]]:
    """The run's sink_eval.json with per-layer sink rates, or None and the reason for the page."""
    path = Path(run_dir) / "sink_eval.json"
    if not path.is_file():
        return None, ("no sink_eval.json in the run folder, so no sink rates per layer "
                      "(pretrain/eval_sink_pretrain.py --json writes it; the sweep scripts do)")
    try:
        evaluation = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None, "sink_eval.json is not readable JSON, so no sink rates per layer; evaluate the run again"
    if not isinstance(evaluation, dict) or not isinstance(evaluation.get("layer_sink_rates"), dict) \
            or not evaluation["layer_sink_rates"].get("sink_1"):
        return None, "sink_eval.json holds no per-layer sink rates; evaluate the run again"
    return evaluation, None


def _esc(value) -> str:
    return html.escape(str(value))


def _figure(uri: str, alt: str, caption: str) -> str:
    return f'<figure><img src="{uri}" alt="{_esc(alt)}"><figcaption>{_esc(caption)}</figcaption></figure>'


def _note(text: str) -> str:
    return f'<p class="note">{_esc(text)}</p>'


def _link(target: Path, page_dir: Path, text: str) -> str:
    href = quote(Path(os.path.relpath(target, page_dir)).as_posix())
    return f'<a href="{_esc(href)}">{_esc(text)}</a>'


def table_html(rows: Sequence[dict]) -> str:
    """The report table (the columns of report.md), each run name linking to its section."""
    head = "".join(f"<th>{_esc(HEADERS[column])}</th>" for column in COLUMNS)
    body = []
    for index, row in enumerate(rows):
        cells = [f'<td><a href="#run-{index}">{_esc(row["run"])}</a></td>']
        for column in COLUMNS[1:]:
            kind = "" if column == "variant" else ' class="number"'
            cells.append(f"<td{kind}>{_esc(table_cell(column, row[column]))}</td>")
        body.append(f'<tr class="run-row">{"".join(cells)}</tr>')
    return f'<table id="report-table"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def run_section(index: int, row: dict, run_dir: Path, series: Optional[dict], page_dir: Path) -> str:
    """One run: its curves over steps, its per-layer bars, links to its files and plots; notes for what is missing."""
    parts = [f'<section class="run" id="run-{index}"><h2>{_esc(row["run"])}</h2>',
             f'<p class="meta">{_esc(row["variant"])}; table row at step {_esc(table_cell("step", row["step"]))}'
             f', {_esc(table_cell("tokens_seen", row["tokens_seen"]))} tokens seen</p>', '<div class="figures">']
    notes = []
    if series is None:
        notes.append("no metrics.csv in the run folder yet, so no curves over steps (the trainer writes it "
                     "from its first logged step)")
    else:
        if not any(name in series for name in SINK_SERIES):
            notes.append("metrics.csv has no sink metrics yet (the trainer logs them at each evaluation when "
                         "it has a probe set)")
        uri = curves_figure(series)
        if uri:
            parts.append(_figure(uri, f"{row['run']}: curves over steps",
                                 "sink rates and losses over training steps, from metrics.csv"))
    evaluation, reason = read_evaluation(run_dir)
    if evaluation is None:
        notes.append(reason)
    else:
        caption = f"Sink rates of each layer, from sink_eval.json (step {evaluation.get('step_count')})"
        parts.append(_figure(layer_sink_figure(evaluation), f"{row['run']}: sink rates per layer", caption))
        if evaluation.get("step_count") != row["step"]:
            notes.append(f"sink_eval.json is from step {evaluation.get('step_count')}, the table from step "
                         f"{row['step']}: evaluate the newest checkpoint again for matching per-layer rates")
    if row.get("massive_activations"):
        parts.append(_figure(massive_figure(row["massive_activations"]), f"{row['run']}: massive activations",
                             "top-1 / median |activation| of each hidden state, from the table's evaluation"))
    else:
        notes.append("no activation statistics in the evaluation, so no massive activations per layer")
    parts.append("</div>")
    parts += [_note(text) for text in notes]
    files = [_link(run_dir / name, page_dir, name) for name in RUN_FILES if (run_dir / name).is_file()]
    pngs = [_link(png, page_dir, png.name) for png in sorted((run_dir / "plots").glob("*.png"))]
    parts.append(f'<p class="files">Files: {", ".join(files) or "none"}</p>')
    parts.append(f'<p class="plots">Plots: {", ".join(pngs)}</p>' if pngs else
                 _note("no PNGs in the run's plots/ folder (pretrain/eval_sink_pretrain.py --plots writes them)"))
    parts.append("</section>")
    return "\n".join(parts)


def report_html(rows: Sequence[dict], page: Path) -> str:
    """The page for `rows` (from `lit_gpt.report.report_rows`), with links relative to `page`."""
    page_dir = Path(os.path.abspath(Path(page).parent))
    folders = [row["run_dir"] for row in rows]
    series = [training_series(folder) for folder in folders]
    overview = sweep_curves_figure([(row["run"], s) for row, s in zip(rows, series)])
    title = f"Attention sink report: {len(rows)} run{'s' if len(rows) != 1 else ''}"
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>{_esc(title)}</title><style>{STYLE}</style></head><body>", f"<h1>{_esc(title)}</h1>",
             "<p>Sink_k: the share (%) of (layer, head, probe sequence) triples whose mean attention to key "
             "position k exceeds eps; Sink*: the same for key slots. Losses in nats; max top-1/median: the "
             "largest ratio of the top |activation| to the median one over the hidden states.</p>",
             table_html(rows), "<h2>Sink rates over training, all runs</h2>"]
    parts.append(_figure(overview, "sink rates over training steps, all runs",
                         "Sink_1 (and Sink* dashed) from each run's metrics.csv")
                 if overview else _note("no run has sink metrics in a metrics.csv yet"))
    parts += [run_section(index, row, folder, s, page_dir)
              for index, (row, folder, s) in enumerate(zip(rows, folders, series))]
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_html(path: Path, rows: Sequence[dict]) -> Path:
    """Write the page to `path` atomically."""
    return write_atomic(path, report_html(rows, path))


__all__ = ["curves_figure", "read_evaluation", "report_html", "sweep_curves_figure", "table_html",
           "training_series", "write_html"]
