"""PNG figures of a sink evaluation (the `ProbeResult` of `lit_gpt.measurement.analysis.evaluate_probe`).

Uses matplotlib's non-interactive Agg backend, so it runs on headless machines. Every module of the package
that draws takes `plt` from here, so that choice is made in this one place.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from matplotlib.ticker import FuncFormatter, MaxNLocator  # noqa: E402

from lit_gpt.core.files import save_figure  # noqa: E402
from lit_gpt.measurement.metrics import LAYER_SERIES, hidden_state_label, normalize_rows  # noqa: E402
from lit_gpt.measurement.probe_result import ProbeResult  # noqa: E402


def save_and_close(fig, path: Path, tight: bool = True) -> Path:
    """Write a finished figure atomically (`save_figure`) and release it, even when the write fails: pyplot
    keeps every open figure alive otherwise. `tight` applies tight_layout first."""
    if tight:
        fig.tight_layout()
    try:
        return save_figure(fig, path)
    finally:
        plt.close(fig)


EXTRA_KEYS_LABEL = "left of the dashed line: key slots and sink tokens"


def draw_attention(ax, attn, n_extra_keys: int = 0):
    """One head's row-normalised map (queries x keys) on a fixed 0..1 scale, so panels compare by colour;
    a dashed line (labelled for a legend) sets the `n_extra_keys` key slots and sink tokens apart from
    the real tokens. Returns the image, for a colorbar."""
    image = ax.imshow(attn, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest")
    if n_extra_keys:
        ax.axvline(n_extra_keys - 0.5, color="white", linestyle="--", linewidth=0.8, label=EXTRA_KEYS_LABEL)
    ax.tick_params(labelsize=7)
    return image


def attention_heatmaps(
    maps: Sequence[torch.Tensor],
    path: Path,
    layers: Optional[Sequence[int]] = None,
    heads: Optional[Sequence[int]] = None,
    n_slots: int = 0,
    n_sink_tokens: int = 0,
) -> Path:
    """Row-normalised attention of the first sequence for each chosen (layer, head), one panel each.

    Columns left of the dashed line are key slots and learned sink tokens.
    """
    layers = list(range(len(maps))) if layers is None else list(layers)
    heads = [0] if heads is None else list(heads)
    fig, axes = plt.subplots(
        len(layers),
        len(heads),
        figsize=(2.8 * len(heads) + 0.6, 2.6 * len(layers)),
        squeeze=False,
        layout="constrained",
    )
    extra = n_slots + n_sink_tokens
    for row, layer in enumerate(layers):
        for col, head in enumerate(heads):
            ax = axes[row][col]
            image = draw_attention(ax, normalize_rows(maps[layer][0, head]).cpu().numpy(), extra)
            ax.set_title(f"layer {layer} head {head}", fontsize=9)
            ax.set_xlabel("key", fontsize=8)
            ax.set_ylabel("query", fontsize=8)
    fig.colorbar(image, ax=axes, shrink=0.8)
    return save_and_close(fig, path, tight=False)  # the constrained layout already placed the colorbar


def sink_by_position(result: ProbeResult, path: Path) -> Path:
    """Sink_k for k = 1..10 (and Sink* / sink-token rate as extra bars)."""
    rates = result.sink_rates
    names = sorted((n for n in rates if n.split("_")[1].isdigit()), key=lambda n: int(n.split("_")[1]))
    labels = [n.split("_")[1] for n in names]
    values = [rates[n] for n in names]
    for extra, label in (("sink_star", "*"), ("sink_token", "sink tok")):
        if extra in rates:
            labels.append(label)
            values.append(rates[extra])
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.bar(labels, values, color="tab:blue")
    ax.set_xlabel("key position k")
    ax.set_ylabel(f"Sink_k (%), eps={result.eps}")
    ax.set_ylim(0, 100)
    return save_and_close(fig, path)


def layer_sink_rates(result: ProbeResult, path: Path) -> Path:
    """Per-layer Sink_1 (and Sink* / sink-token rate when present)."""
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for name in LAYER_SERIES:
        if name in result.layer_sink_rates:
            values = result.layer_sink_rates[name]
            ax.plot(range(len(values)), values, marker="o", label=name)
    ax.set_xlabel("layer")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("sink rate (%)")
    ax.set_ylim(-2, 102)
    ax.legend()
    return save_and_close(fig, path)


def norms_by_position(result: ProbeResult, path: Path) -> Path:
    """L2 norm per position of hidden states, keys and values, one line per layer; a panel whose norms the
    model could not give (None, see `unavailable` in the result) says so instead."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    offset = result.n_sink_tokens
    for ax, name in zip(axes, ("hidden", "keys", "values")):
        ax.set_title(name)
        rows = result.norms[name]
        if rows is None:
            ax.text(
                0.5,
                0.5,
                f"this architecture gives no {name}\n(`unavailable` in the report says why)",
                ha="center",
                va="center",
                transform=ax.transAxes,
            )
            ax.set_axis_off()
            continue
        cmap = plt.get_cmap("viridis", max(len(rows), 2))
        for layer, row in enumerate(rows):
            label = f"layer {hidden_state_label(layer)}" if name == "hidden" else f"layer {layer}"
            ax.plot(range(-offset, len(row) - offset), row, color=cmap(layer), label=label, linewidth=1)
        ax.set_xlabel("position" + (" (negative: sink tokens)" if offset else ""))
        ax.set_ylabel("L2 norm")
    axes[0].legend(fontsize=6)
    return save_and_close(fig, path)


def massive_activations(result: ProbeResult, path: Path) -> Path:
    """Layerwise top-1/2/3 |activation| against the median (log scale), as in Sun et al. 2024."""
    stats = result.massive_activations
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for name in ("top1", "top2", "top3", "median"):
        ax.plot(range(len(stats[name])), stats[name], marker="o", label=name)
    ax.set_yscale("log")
    ax.set_xticks(range(len(stats["top1"])), [hidden_state_label(index) for index in range(len(stats["top1"]))])
    ax.set_xlabel("output of layer (embed: the embedding)")
    ax.set_ylabel("|activation|")
    ax.legend()
    return save_and_close(fig, path)


def layer_history_heatmap(
    steps: Sequence[int], rates: Sequence[Sequence[float]], path: Path, label: str = "Sink_1"
) -> Path:
    """A per-layer sink rate over a run's evaluations: one row per layer (0 on top), one column per step."""
    fig, ax = plt.subplots(figsize=(6.5, 1.4 + 0.22 * len(rates)))
    image = ax.imshow(rates, cmap="viridis", vmin=0.0, vmax=100.0, aspect="auto", interpolation="nearest")
    ax.xaxis.set_major_locator(MaxNLocator(nbins=8, integer=True))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: str(steps[int(x)]) if 0 <= int(x) < len(steps) else ""))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("step")
    ax.set_ylabel("layer")
    fig.colorbar(image, ax=ax, label=f"{label} (%)")
    return save_and_close(fig, path)


def write_plots(
    result: ProbeResult,
    maps: Sequence[torch.Tensor],
    out_dir: Path,
    layers: Optional[Sequence[int]] = None,
    heads: Optional[Sequence[int]] = None,
    n_slots: int = 0,
) -> list[Path]:
    """Every figure of one evaluation into `out_dir`; returns the written paths."""
    out_dir = Path(out_dir)
    return [
        attention_heatmaps(maps, out_dir / "attention.png", layers, heads, n_slots, result.n_sink_tokens),
        sink_by_position(result, out_dir / "sink_by_position.png"),
        layer_sink_rates(result, out_dir / "layer_sink_rates.png"),
        norms_by_position(result, out_dir / "norms.png"),
        massive_activations(result, out_dir / "massive_activations.png"),
    ]


__all__ = [
    "EXTRA_KEYS_LABEL",
    "attention_heatmaps",
    "draw_attention",
    "layer_history_heatmap",
    "layer_sink_rates",
    "massive_activations",
    "norms_by_position",
    "plt",
    "save_and_close",
    "sink_by_position",
    "write_plots",
]
