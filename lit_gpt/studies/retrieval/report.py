"""The study's outputs: results.md (tables), results.json (every number) and three PNG plots."""

from __future__ import annotations

from pathlib import Path

from lit_gpt.core.files import write_atomic, write_json
from lit_gpt.measurement.plots import plt, save_and_close


def headline_k(result: dict) -> int:
    """The k the comparison table and the per-layer plot show: the middle of the measured ones."""
    ks = sorted(result["settings"]["k"])
    return ks[len(ks) // 2]


def _methods(run: dict) -> list[str]:
    return list(dict.fromkeys(row["method"] for row in run["rows"]))


def _row(run: dict, method: str, k: int) -> dict:
    return next(row for row in run["rows"] if row["method"] == method and row["k"] == k)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def runs_table(result: dict) -> list[str]:
    ks = sorted(result["settings"]["k"])
    header = [
        "run",
        "variant",
        "step",
        "measured / calibration windows",
        "dense perplexity",
        "weight on first token",
        *(f"first token in top-{k}" for k in ks),
        "mean \\|q'\\|², \\|k'\\|²",
    ]
    rows = []
    for run in result["runs"]:
        exact = [r for r in run["rows"] if r["method"] == "exact top-k"]
        hits = [f"{100 * next(r['first_in_top'] for r in exact if r['k'] == k):.1f}%" if exact else "--" for k in ks]
        norms = [sum(values) / len(values) for values in (run["query_norm2_layers"], run["key_norm2_layers"])]
        rows.append(
            [
                run["run"],
                run["variant"],
                str(run["step"]),
                f"{run['n_measured']} / {run['n_calibration']}",
                f"{run['dense_perplexity']:.3f}",
                f"{100 * run['first_mass']:.1f}%",
                *hits,
                f"{norms[0]:.1f}, {norms[1]:.1f}",
            ]
        )
    return _table(header, rows)


def comparison_table(result: dict) -> list[str]:
    """One row per method at the headline k; per run recall, mass and perplexity relative to dense."""
    k = headline_k(result)
    runs = result["runs"]
    header = ["method", "compute"]
    for run in runs:
        header += [f"{run['run']} recall@{k}", "mass", "ppl / dense", "+ first"]
    rows = []
    for method in _methods(runs[0]):
        cells = [method, f"{_row(runs[0], method, k)['compute']:.3f}"]
        for run in runs:
            row, dense = _row(run, method, k), run["dense_perplexity"]
            cells += [
                f"{row['recall']:.3f}",
                f"{row['mass']:.3f}",
                f"{row['perplexity'] / dense:.3f}",
                f"{row['perplexity_first'] / dense:.3f}",
            ]
        rows.append(cells)
    return _table(header, rows)


def run_table(run: dict) -> list[str]:
    header = [
        "method",
        "k",
        "recall@k",
        "mass captured",
        "first token retrieved",
        "perplexity",
        "perplexity + first",
        "compute fraction",
    ]
    rows = [
        [
            row["method"],
            str(row["k"]),
            f"{row['recall']:.3f}",
            f"{row['mass']:.3f}",
            f"{100 * row['first_in_top']:.1f}%",
            f"{row['perplexity']:.3f}",
            f"{row['perplexity_first']:.3f}",
            f"{row['compute']:.3f}",
        ]
        for row in run["rows"]
    ]
    return _table(header, rows)


def results_markdown(result: dict) -> str:
    settings = result["settings"]
    lines = [
        "# Approximate attention: finding each query's top-k keys",
        "",
        f"Probe `{result['probe']}`, {settings['length']}-token windows; k = {settings['k']}; FAVOR+ "
        f"m = {settings['features']}; k-means C = {settings['clusters']} visiting b = {settings['probes']} "
        f"buckets; seed {settings['seed']}. Recall and mass: queries that see more than k keys, mean over "
        "layers, heads and queries. Perplexity: every layer restricted to the retrieved keys (+ first: "
        "and the first token). Compute: multiply-adds relative to dense attention "
        "(`lit_gpt/studies/retrieval/search.py`).",
        "",
        "## Runs",
        "",
        *runs_table(result),
        "",
        f"## All methods at k = {headline_k(result)}",
        "",
        *comparison_table(result),
    ]
    for run in result["runs"]:
        lines += ["", f"## {run['run']} ({run['variant']})", "", *run_table(run)]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------- plots
def _panels(count: int, height: float = 3.6):
    fig, axes = plt.subplots(1, count, figsize=(4.6 * count, height), squeeze=False, sharey=True)
    return fig, axes[0]


def _legend_beside(axes) -> None:
    axes[-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))


def _label_panel(ax, run: dict, ticks: list, xlabel: str) -> None:
    """A run's panel: x ticks at `ticks` on a log axis (no minor ticks), the run as title, `xlabel`."""
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.minorticks_off()
    ax.set_title(f"{run['run']} ({run['variant']})", fontsize=9)
    ax.set_xlabel(xlabel)


def recall_vs_compute(result: dict, path: Path) -> Path:
    """Per run: recall@k against compute fraction, one line per method through its k values."""
    fig, axes = _panels(len(result["runs"]))
    for ax, run in zip(axes, result["runs"]):
        for method in _methods(run):
            rows = [r for r in run["rows"] if r["method"] == method]
            ax.plot([r["compute"] for r in rows], [r["recall"] for r in rows], marker="o", label=method)
        ax.axvline(1.0, color="black", lw=0.8, ls=":")
        ax.set_xscale("log")
        ticks = [t for t in (0.25, 0.5, 1, 2, 4, 8, 16) if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        _label_panel(ax, run, ticks, "compute fraction (dense = 1; points: k)")
    axes[0].set_ylabel("recall@k of the true top-k")
    _legend_beside(axes)
    return save_and_close(fig, path)


def perplexity_vs_k(result: dict, path: Path) -> Path:
    """Per run: perplexity with attention restricted to the retrieved keys (solid) and with the first token
    kept (dashed), against k; the dense model's perplexity in black."""
    fig, axes = _panels(len(result["runs"]))
    for ax, run in zip(axes, result["runs"]):
        for method in _methods(run):
            rows = [r for r in run["rows"] if r["method"] == method]
            (line,) = ax.plot([r["k"] for r in rows], [r["perplexity"] for r in rows], marker="o", label=method)
            ax.plot([r["k"] for r in rows], [r["perplexity_first"] for r in rows], ls="--", color=line.get_color())
        ax.axhline(run["dense_perplexity"], color="black", lw=1, label="dense")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        _label_panel(ax, run, sorted(result["settings"]["k"]), "k (dashed: + first token)")
    axes[0].set_ylabel("probe perplexity")
    _legend_beside(axes)
    return save_and_close(fig, path)


def mass_by_layer(result: dict, path: Path) -> Path:
    """Per layer: attention mass the exact top-k captures at the headline k, and the weight on the first token."""
    k = headline_k(result)
    fig, axes = plt.subplots(1, 2, figsize=(9.2, 3.6))
    for run in result["runs"]:
        exact = [r for r in run["rows"] if r["method"] == "exact top-k" and r["k"] == k]
        layers = range(1, len(run["first_mass_layers"]) + 1)
        if exact:
            axes[0].plot(layers, exact[0]["layers"]["mass"], marker="o", label=run["run"])
        axes[1].plot(layers, run["first_mass_layers"], marker="o", label=run["run"])
    axes[0].set_title(f"mass captured by the exact top-{k}", fontsize=9)
    axes[1].set_title("share of a query's weight on the first token", fontsize=9)
    for ax in axes:
        ax.set_xlabel("layer")
        if ax.get_legend_handles_labels()[0]:  # the left panel is empty when exact top-k was not measured
            ax.legend(fontsize=7)
    return save_and_close(fig, path)


def write_results(result: dict, out: Path) -> list[Path]:
    """results.md, results.json and the plots under `out`."""
    out = Path(out)
    return [
        write_atomic(out / "results.md", results_markdown(result)),
        write_json(out / "results.json", result),
        recall_vs_compute(result, out / "recall_vs_compute.png"),
        perplexity_vs_k(result, out / "perplexity_vs_k.png"),
        mass_by_layer(result, out / "mass_by_layer.png"),
    ]


__all__ = [
    "comparison_table",
    "headline_k",
    "mass_by_layer",
    "perplexity_vs_k",
    "recall_vs_compute",
    "results_markdown",
    "write_results",
]
