"""One table over several Hugging Face models: which of them form an attention sink, and how strongly.

Columns: model, architecture, whether the probe started with BOS, Sink_1..Sink_k, probe loss, and the
largest ratio over hidden states of the top |activation| to the median one (massive activations, Sun
et al. 2024, reach ratios in the thousands where a sink forms). Written as Markdown and JSON, with a
bar chart of Sink_1 per model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from lit_gpt.core.errors import UserError
from lit_gpt.core.files import write_atomic, write_json
from lit_gpt.measurement.analysis import peak_activation_ratio
from lit_gpt.measurement.evaluation import metric_label
from lit_gpt.measurement.plots import plt, save_and_close
from lit_gpt.measurement.probe_result import ProbeResult


def _path_parts(spec: str) -> tuple[str, ...]:
    path = Path(spec).expanduser()
    return path.resolve().parts[1:] if path.is_dir() else tuple(spec.split("/"))


def model_names(specs: Sequence[str]) -> list[str]:
    """A short, distinct name per model for its outputs: its folder's name, with as many parent folder names
    as it takes to tell the models apart (`a_hf` and `b_hf` for two exported `hf` folders)."""
    parts = [_path_parts(spec) for spec in specs]
    depth = [1] * len(specs)
    while True:
        names = ["_".join(p[-d:]) for p, d in zip(parts, depth)]
        clashing = [i for i, name in enumerate(names) if names.count(name) > 1]
        if not clashing:
            return names
        longer = [i for i in clashing if depth[i] < len(parts[i])]
        if not longer:
            raise UserError(f"{specs[clashing[0]]} is given twice (as --model or in --models); pass each model once")
        for i in longer:
            depth[i] += 1


def comparison_row(name: str, result: ProbeResult) -> dict:
    """One model's line of the comparison: what `lit_gpt.cli.eval_hf` measured and the model it measured."""
    return {
        "model": name,
        "architecture": result.about["architecture"],
        "bos": result.about["bos"],
        "sink_rates": result.sink_rates,
        "probe_loss": result.loss,
        "max_top1_over_median": peak_activation_ratio(result.massive_activations)[0],
    }


def comparison_markdown(rows: Sequence[dict]) -> str:
    rates = list(rows[0]["sink_rates"])
    header = [
        "model",
        "architecture",
        "BOS",
        *(f"{metric_label(name)} (%)" for name in rates),
        "probe loss",
        "max top1/median",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        ratio = row["max_top1_over_median"]
        cells = [
            row["model"],
            row["architecture"],
            "yes" if row["bos"] else "no",
            *(f"{row['sink_rates'][name]:.2f}" for name in rates),
            f"{row['probe_loss']:.3f}",
            "--" if ratio is None else f"{ratio:.1f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def comparison_chart(rows: Sequence[dict], path: Path) -> Path:
    """Sink_1 per model."""
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(rows) + 2), 3.8))
    ax.bar(range(len(rows)), [row["sink_rates"]["sink_1"] for row in rows], color="tab:blue")
    ax.set_xticks(range(len(rows)), [row["model"] for row in rows], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("Sink_1 (%)")
    ax.set_ylim(0, 100)
    return save_and_close(fig, path)


def write_comparison(rows: Sequence[dict], folder: Path, chart: bool = False) -> list[Path]:
    """comparison.md and comparison.json (and comparison.png with `chart`) in `folder`."""
    written = [
        write_atomic(folder / "comparison.md", comparison_markdown(rows) + "\n"),
        write_json(folder / "comparison.json", list(rows)),
    ]
    if chart:
        written.append(comparison_chart(rows, folder / "comparison.png"))
    return written


__all__ = ["comparison_chart", "comparison_markdown", "comparison_row", "model_names", "write_comparison"]
