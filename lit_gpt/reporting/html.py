"""report.html: a sweep's report as one page for a browser, for looking at a sweep without a dashboard service.

The page holds the report table (with the settings that differ between the runs, so a reader sees what
tells the rows apart), every run's Sink_1 and every run's validation loss over training steps in one
figure each (a run keeps its colour in both), and per run: its sink rates and losses over steps (from
metrics.csv, the trainer's periodic evaluation), its sink rates per layer (from the run's
sink_eval.json), massive activations per layer and the attention maps of its sink layers, every head
(from the report row), and links to its files and the PNGs in its plots/ folder.

Layers count from 0 everywhere on the page, as in every other output of the project: the massive
activations of layer l are its output, `embed` the embedding output before layer 0. Step axes
have whole-number ticks only, and every line or bar series drawn is named in a legend.

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

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import LogFormatter, MaxNLocator

from lit_gpt.core.files import write_atomic
from lit_gpt.measurement.analysis import activation_ratios
from lit_gpt.measurement.evaluation import metric_label
from lit_gpt.measurement.metrics import LAYER_SERIES
from lit_gpt.measurement.plots import draw_attention, plt
from lit_gpt.reporting.table import (
    COLUMNS,
    HEADERS,
    MAX_SINK_LAYERS,
    decode_maps,
    differing_settings,
    layer_label,
    run_settings,
    setting_cell,
    table_cell,
)
from lit_gpt.training.loggers import read_metrics

SINK_SERIES = {name: metric_label(name) for name in LAYER_SERIES}
LOSS_SERIES = {"train_loss": "train", "valid_loss": "valid (mean over domains)", "probe_loss": "probe"}
# The overlays of all runs: series name -> (what the legend adds to the run's name, line style).
SWEEP_SINK_LINES = {"sink_1": ("Sink_1", "-"), "sink_star": ("Sink*", "--")}
SWEEP_LOSS_LINES = {"valid_loss": ("", "-")}
HEADS_PER_ROW = 8
RUN_FILES = ("run.yaml", "metrics.csv", "sink_eval.json")
STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1200px; padding: 0 1em; color: #222; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; }
th { background: #f0f0f0; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
th.setting { background: #e6eef8; }
section.run { border-top: 1px solid #ccc; margin-top: 1.5em; }
.figures { display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; }
figure { margin: 0; }
figure img { max-width: 100%; }
figcaption, .meta { color: #555; font-size: 0.9em; }
.note { background: #fff6d8; border-left: 4px solid #e0b000; padding: 0.4em 0.8em; }
"""


def svg_uri(fig: Figure) -> str:
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


def _plot_steps(ax, points: Sequence[tuple[int, float]], **style) -> None:
    """A series [(step, value)] as a line over steps, with markers while the points are few enough to tell apart."""
    steps, values = zip(*sorted(points))
    ax.plot(steps, values, marker="o" if len(steps) < 30 else None, markersize=4, **style)


def _step_axis(ax) -> None:
    """Steps are whole numbers, so their axis gets whole-number ticks only (a 4-step run would show 0.5 steps)."""
    ax.set_xlabel("step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def curves_figure(series: dict) -> Optional[Figure]:
    """Sink rates (left) and losses (right) over training steps; None when the run has neither."""
    panels = [names for names in (SINK_SERIES, LOSS_SERIES) if any(name in series for name in names)]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.2), squeeze=False)
    for ax, names in zip(axes[0], panels):
        for name, label in names.items():
            if name in series:
                _plot_steps(ax, series[name], label=label)
        _step_axis(ax)
        ax.legend(fontsize=8)
        sinks = names is SINK_SERIES
        ax.set_title("sink rates" if sinks else "losses", fontsize=10)
        ax.set_ylabel("sink rate (%)" if sinks else "loss (nats)")
        if sinks:
            ax.set_ylim(bottom=0)
    fig.tight_layout()
    return fig


def sweep_figure(runs: Sequence[tuple[str, Optional[dict]]], lines: dict, ylabel: str, title: str) -> Optional[Figure]:
    """One line per run and series of `lines` (name -> (legend suffix, line style)), the legend under the plot;
    a run's colour is its place in the table, the same on every overlay. None when no run has any series."""
    drawn = [
        (index, run, name, series[name])
        for index, (run, series) in enumerate(runs)
        for name in lines
        if series and name in series
    ]
    if not drawn:
        return None
    fig, ax = plt.subplots(figsize=(5.6, 3.0 + 0.15 * math.ceil(len(drawn) / 2)), layout="constrained")
    for index, run, name, points in drawn:
        suffix, style = lines[name]
        _plot_steps(ax, points, color=f"C{index % 10}", linestyle=style, label=f"{run} {suffix}".strip())
    _step_axis(ax)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    fig.legend(loc="outside lower center", ncols=2, fontsize=8)
    return fig


def sweep_sink_figure(runs: Sequence[tuple[str, Optional[dict]]]) -> Optional[Figure]:
    """Sink_1 over training steps, one line per run (Sink* dashed in the same colour where a run has it)."""
    fig = sweep_figure(runs, SWEEP_SINK_LINES, "sink rate (%)", "Sink_1 (Sink* dashed)")
    if fig is not None:
        fig.axes[0].set_ylim(bottom=0)
    return fig


def sweep_loss_figure(runs: Sequence[tuple[str, Optional[dict]]]) -> Optional[Figure]:
    """The validation loss (mean over domains) over training steps, one line per run."""
    return sweep_figure(runs, SWEEP_LOSS_LINES, "loss (nats)", "validation loss")


def layer_sink_figure(evaluation: dict) -> Figure:
    """Sink_1 (and Sink* / Sink_tok where present) of each layer, grouped bars."""
    rates = evaluation["layer_sink_rates"]
    names = [name for name in SINK_SERIES if name in rates]
    n_layers = len(rates[names[0]])
    width = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.5 * n_layers + 2), 3.2))
    for index, name in enumerate(names):
        ax.bar(
            [layer - 0.4 + width * (index + 0.5) for layer in range(n_layers)],
            rates[name],
            width,
            label=SINK_SERIES[name],
        )
    ax.set_xlabel("layer")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(f"sink rate (%), eps={evaluation.get('eps')}")
    ax.set_ylim(0, 100)
    ax.set_title("sink rates per layer", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def massive_figure(stats: dict) -> Figure:
    """Top-1 / median |activation| of each hidden state (log scale): the massive activations of a sink."""
    ratios = [float("nan") if ratio is None else ratio for ratio in activation_ratios(stats)]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.5 * len(ratios) + 2), 3.2))
    bars = ax.bar(range(len(ratios)), ratios, color="tab:red", label="top-1 / median |activation|")
    ax.bar_label(bars, fmt="%.0f", fontsize=7)
    ax.set_xticks(range(len(ratios)), [layer_label(layer) for layer in range(len(ratios))])
    ax.set_xlabel("output of layer (embed: the embedding)")
    ax.set_ylabel("top-1 / median |activation|")
    ax.set_yscale("log")
    finite = [ratio for ratio in ratios if math.isfinite(ratio)]
    if finite:  # room above the tallest bar for its label and the legend
        ax.set_ylim(top=max(finite) * 4)
    ax.yaxis.set_major_formatter(LogFormatter())  # 20 and 50 read better than 2x10^1 and 5x10^1
    ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False))
    ax.set_title("massive activations", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig


def attention_figure(maps: np.ndarray, layer: int, n_extra_keys: int) -> Figure:
    """Every head of one layer's map (heads, queries, keys), `HEADS_PER_ROW` to a row, on one colour scale;
    the legend names the dashed line before the real keys where the variant has key slots or sink tokens."""
    n_heads = len(maps)
    n_cols = min(n_heads, HEADS_PER_ROW)
    n_rows = math.ceil(n_heads / n_cols)
    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=(1.5 * n_cols + 1.0, 1.5 * n_rows + 0.8), squeeze=False, layout="constrained"
    )
    for head, ax in enumerate(axes.flat):
        if head < n_heads:
            image = draw_attention(ax, maps[head], n_extra_keys)
            ax.set_title(f"head {head}", fontsize=8)
        else:
            ax.set_axis_off()
    for ax in axes[:, 0]:
        ax.set_ylabel("query", fontsize=8)
    for ax in axes[-1]:
        ax.set_xlabel("key", fontsize=8)
    fig.colorbar(image, ax=axes, shrink=0.8, label="attention weight")
    if n_extra_keys:  # the line is white, so its legend sits on the colour of the maps' background
        fig.legend(
            handles=axes[0][0].lines[:1],
            loc="outside lower center",
            fontsize=8,
            facecolor="#440154",
            labelcolor="white",
        )
    fig.suptitle(f"layer {layer}", fontsize=10)
    return fig


def read_evaluation(run_dir: Path) -> tuple[Optional[dict], Optional[str]]:
    """The run's sink_eval.json with per-layer sink rates, or None and the reason for the page."""
    path = Path(run_dir) / "sink_eval.json"
    if not path.is_file():
        return None, (
            "no sink_eval.json in the run folder, so no sink rates per layer "
            "(pretrain/eval_sink_pretrain.py --json writes it; the sweep scripts do)"
        )
    try:
        evaluation = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None, "sink_eval.json is not readable JSON, so no sink rates per layer; evaluate the run again"
    if (
        not isinstance(evaluation, dict)
        or not isinstance(evaluation.get("layer_sink_rates"), dict)
        or not evaluation["layer_sink_rates"].get("sink_1")
    ):
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
    """The report table: the columns of report.md, with a column after the variant for each setting whose value
    differs between the runs (`differing_settings`), each run name linking to its section."""
    settings = differing_settings(rows)
    head = (
        [f"<th>{_esc(HEADERS[column])}</th>" for column in COLUMNS[:2]]
        + [f'<th class="setting">{_esc(name)}</th>' for name in settings]
        + [f"<th>{_esc(HEADERS[column])}</th>" for column in COLUMNS[2:]]
    )
    body = []
    for index, row in enumerate(rows):
        values = run_settings(row)
        cells = (
            [
                f'<td><a href="#run-{index}">{_esc(row["run"])}</a></td>',
                f"<td>{_esc(table_cell('variant', row['variant']))}</td>",
            ]
            + [f'<td class="setting">{_esc(setting_cell(values.get(name)))}</td>' for name in settings]
            + [f'<td class="number">{_esc(table_cell(column, row[column]))}</td>' for column in COLUMNS[2:]]
        )
        body.append(f'<tr class="run-row">{"".join(cells)}</tr>')
    return (
        f'<table id="report-table"><thead><tr>{"".join(head)}</tr></thead><tbody>{"".join(body)}</tbody></table>'
        + settings_note(settings, len(rows))
    )


def settings_note(settings: Sequence[str], n_runs: int) -> str:
    """What the settings columns are, or that the runs have none that differ."""
    if settings:
        return (
            '<p class="meta">Columns headed in blue: the model fields and training arguments stored in the '
            "checkpoints whose values differ between these runs; every other one is the same in all of them "
            "(the run's name and its model overrides are not compared, the model fields are).</p>"
        )
    if n_runs > 1:
        return '<p class="meta">The runs share every model field and training argument stored in their checkpoints.</p>'
    return ""


def sweep_html(rows: Sequence[dict], series: Sequence[Optional[dict]]) -> str:
    """The overlays of all runs, Sink_1 beside the validation loss, or a note for each that no run can fill."""
    runs = [(row["run"], s) for row, s in zip(rows, series)]
    sinks, losses = sweep_sink_figure(runs), sweep_loss_figure(runs)
    return "\n".join(
        [
            "<h2>All runs over training</h2>",
            '<div class="figures">',
            _figure(
                svg_uri(sinks),
                "sink rates over training steps, all runs",
                "Sink_1 (and Sink* dashed) from each run's metrics.csv",
            )
            if sinks
            else _note("no run has sink metrics in a metrics.csv yet"),
            _figure(
                svg_uri(losses),
                "validation loss over training steps, all runs",
                "validation loss (mean over domains) from each run's metrics.csv; a run has one colour in both charts",
            )
            if losses
            else _note("no run has validation losses in a metrics.csv yet"),
            "</div>",
        ]
    )


def _layer_rates(rates: dict, layer: int) -> str:
    return ", ".join(f"{label} {rates[name][layer]:.1f}%" for name, label in SINK_SERIES.items() if name in rates)


def attention_html(row: dict) -> str:
    """The attention maps of the run's sink layers (`lit_gpt.reporting.table.sink_layers`), every head, a figure a layer."""
    record = row["attention_maps"]
    extra_keys = record["n_slots"] + record["n_sink_tokens"]
    figures = []
    for layer, encoded in zip(record["layers"], record["maps"]):
        maps = decode_maps(encoded)
        caption = (
            f"Layer {layer} (layers count from 0, as on the axis of the sink rates per layer): "
            f"{_layer_rates(row['layer_sink_rates'], layer)} in the table's evaluation. All {len(maps)} heads' "
            "attention on the first probe sequence, rows (queries) normalised as the sink metric sees them."
        )
        figures.append(
            _figure(
                svg_uri(attention_figure(maps, layer, extra_keys)), f"{row['run']}: attention of layer {layer}", caption
            )
        )
    return "\n".join(
        [
            "<h3>Attention of the sink layers</h3>",
            f'<p class="meta">The {MAX_SINK_LAYERS} layers at most whose sink rate (the highest of their '
            "Sink_1, Sink* and Sink_tok) is highest and above zero; the first layer when no layer has "
            "a sink.</p>",
            '<div class="figures">',
            *figures,
            "</div>",
        ]
    )


def run_section(index: int, row: dict, run_dir: Path, series: Optional[dict], page_dir: Path) -> str:
    """One run: its curves over steps, its per-layer bars, the attention of its sink layers, links to its files
    and plots; notes for what is missing."""
    parts = [
        f'<section class="run" id="run-{index}"><h2>{_esc(row["run"])}</h2>',
        f'<p class="meta">{_esc(row["variant"])}; table row at step {_esc(table_cell("step", row["step"]))}'
        f", {_esc(table_cell('tokens_seen', row['tokens_seen']))} tokens seen</p>",
        '<div class="figures">',
    ]
    notes = []
    if series is None:
        notes.append(
            "no metrics.csv in the run folder yet, so no curves over steps (the trainer writes it "
            "from its first logged step)"
        )
    else:
        if not any(name in series for name in SINK_SERIES):
            notes.append(
                "metrics.csv has no sink metrics yet (the trainer logs them at each evaluation when it has a probe set)"
            )
        curves = curves_figure(series)
        if curves:
            parts.append(
                _figure(
                    svg_uri(curves),
                    f"{row['run']}: curves over steps",
                    "sink rates and losses over training steps, from metrics.csv",
                )
            )
    evaluation, reason = read_evaluation(run_dir)
    if evaluation is None:
        notes.append(reason or "no sink evaluation")
    else:
        caption = (
            f"Sink rates of each layer (layers count from 0), from sink_eval.json (step {evaluation.get('step_count')})"
        )
        parts.append(_figure(svg_uri(layer_sink_figure(evaluation)), f"{row['run']}: sink rates per layer", caption))
        if evaluation.get("step_count") != row["step"]:
            notes.append(
                f"sink_eval.json is from step {evaluation.get('step_count')}, the table from step "
                f"{row['step']}: evaluate the newest checkpoint again for matching per-layer rates"
            )
    if row.get("massive_activations"):
        parts.append(
            _figure(
                svg_uri(massive_figure(row["massive_activations"])),
                f"{row['run']}: massive activations",
                "top-1 / median |activation| of the output of each layer (counted from 0) and of the "
                "embedding (embed), from the table's evaluation",
            )
        )
    else:
        notes.append("no activation statistics in the evaluation, so no massive activations per layer")
    parts.append("</div>")
    if row.get("attention_maps"):
        parts.append(attention_html(row))
    else:
        notes.append(
            "no attention maps in the evaluation, so none of the sink layers (the report evaluates "
            "the run again when its cached evaluation is of an older format)"
        )
    parts += [_note(text) for text in notes]
    files = [_link(run_dir / name, page_dir, name) for name in RUN_FILES if (run_dir / name).is_file()]
    pngs = [_link(png, page_dir, png.name) for png in sorted((run_dir / "plots").glob("*.png"))]
    parts.append(f'<p class="files">Files: {", ".join(files) or "none"}</p>')
    parts.append(
        f'<p class="plots">Plots: {", ".join(pngs)}</p>'
        if pngs
        else _note("no PNGs in the run's plots/ folder (pretrain/eval_sink_pretrain.py --plots writes them)")
    )
    parts.append("</section>")
    return "\n".join(parts)


def report_html(rows: Sequence[dict], page: Path) -> str:
    """The page for `rows` (from `lit_gpt.reporting.table.report_rows`), with links relative to `page`."""
    page_dir = Path(os.path.abspath(Path(page).parent))
    folders = [row["run_dir"] for row in rows]
    series = [training_series(folder) for folder in folders]
    title = f"Attention sink report: {len(rows)} run{'s' if len(rows) != 1 else ''}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_esc(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{_esc(title)}</h1>",
        "<p>Sink_k: the share (%) of (layer, head, probe sequence) triples whose mean attention to key "
        "position k exceeds eps; Sink*: the same for key slots. Losses in nats; max top-1/median: the "
        "largest ratio of the top |activation| to the median one over the layers' outputs, at the layer "
        "given (layers count from 0); embed top-1/median: the same ratio for the embedding output.</p>",
        table_html(rows),
        sweep_html(rows, series),
    ]
    parts += [
        run_section(index, row, folder, s, page_dir)
        for index, (row, folder, s) in enumerate(zip(rows, folders, series))
    ]
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_html(path: Path, rows: Sequence[dict]) -> Path:
    """Write the page to `path` atomically."""
    return write_atomic(path, report_html(rows, path))


__all__ = [
    "attention_figure",
    "curves_figure",
    "layer_sink_figure",
    "massive_figure",
    "read_evaluation",
    "report_html",
    "svg_uri",
    "sweep_loss_figure",
    "sweep_sink_figure",
    "table_html",
    "training_series",
    "write_html",
]
