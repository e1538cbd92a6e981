"""The reproduction grid (`scripts/reproduce.sh`): the rows of the paper's ablation tables where it
reports large effects, plus four sink designs from neighbouring work, each trained on one schedule,
and the tables of `docs/reproduction.md` built from their evaluations.

Everything that decides whether a row agrees with the paper is fixed here, before any run: the grid,
the seeds, the effect the paper reports for each row (its direction against the default row), and the
"no change" band. A row's value is compared with the default row's Sink_1 (the default has no slot or
sink token, so a slot's Sink* is measured against where the sink sat without it). The band is one
head's worth: 100 / (layers x heads) percentage points of the default row's model at the scale (4.17
points for the cpu scale's 24 heads, 1.25 for the paper's 60M model), since a rate moves in such steps
when whole heads turn into sinks. A difference within the band is "no change".
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import yaml

from lit_gpt.core.errors import UserError
from lit_gpt.measurement.analysis import peak_activation_ratio
from lit_gpt.measurement.probe_result import ProbeResult
from lit_gpt.model.config import Config
from lit_gpt.training.checkpoint import checkpoint_step, find_latest
from lit_gpt.training.run_config import CONFIGS, PAPER, compose

NOT_RUN = "not yet run"
DEFAULT = "softmax"
UP, DOWN, SAME = "up", "down", "no change"
ATTENTION = "Attention operation (paper Table 5, 60M)"
DECAY = "Weight decay (paper Table 2, 60M)"
RATE = "Learning rate (paper Table 2, 60M)"
KV_BIAS = "Key/value biases (paper Table 4, 60M)"
DATA = "Data: the first token of a window"
BEYOND = "Beyond the paper: sink designs of neighbouring work"
TABLES = (ATTENTION, DECAY, RATE, KV_BIAS, DATA, BEYOND)
SEEDS = (42, 43)


class ReproductionError(UserError, ValueError):
    """A row name the grid does not have (ROWS of scripts/reproduce.sh, --rows); the message lists the rows."""

    exit_status = 2


@dataclass(frozen=True)
class Row:
    """One row of a table: a config of `configs/` trained once per seed."""

    name: str
    table: str
    label: str
    config: str
    seeds: tuple[int, ...] = SEEDS[:1]

    def runs(self) -> list[str]:
        return [f"repro_{self.name}_seed{seed}" for seed in self.seeds]


@dataclass(frozen=True)
class Effect:
    """What the paper (or the work named in `source`) reports for a row: `metric` moves `expected` against
    the default row's Sink_1; `reported` is its figure as text."""

    row: str
    metric: str
    reported: str
    expected: str
    source: str = "paper"


GRID = (
    Row(DEFAULT, ATTENTION, "softmax, sum (the default)", "configs/tinyllama_60m.yaml", SEEDS),
    Row("sigmoid_norm", ATTENTION, "sigmoid, sum", "configs/attnsim/tinyllama_60m_sim_sigmoid_norm.yaml", SEEDS),
    Row("sigmoid_no_norm", ATTENTION, "sigmoid, none", "configs/attnsim/tinyllama_60m_sim_sigmoid_no_norm.yaml", SEEDS),
    Row(
        "elu_no_norm",
        ATTENTION,
        "elu(q.k/sqrt(d)) + 1, none",
        "configs/attnsim/tinyllama_60m_sim_elu_no_norm.yaml",
        SEEDS,
    ),
    Row(
        "elu_kernel_norm",
        ATTENTION,
        "(elu(q)+1).(elu(k)+1)/sqrt(d), sum",
        "configs/attnkernel/tinyllama_60m_elu_norm.yaml",
        SEEDS,
    ),
    Row("decay0", DECAY, "weight decay 0", "configs/decay/tinyllama_60m_decay0.yaml"),
    Row("decay0.5", DECAY, "weight decay 0.5", "configs/decay/tinyllama_60m_decay5e-1.yaml"),
    Row("decay5", DECAY, "weight decay 5.0", "configs/decay/tinyllama_60m_decay5e0.yaml"),
    Row("lr_tenth", RATE, "a tenth of the scale's rate", "configs/reproduce/lr_tenth.yaml"),
    Row("k_bias", KV_BIAS, "Q[k*;K], [0;V]", "configs/kv_bias/tinyllama_60m_k_bias.yaml"),
    Row("v_bias", KV_BIAS, "Q K, [v*;V] (value bias only)", "configs/kv_bias/tinyllama_60m_v_bias.yaml"),
    Row("kv_bias", KV_BIAS, "Q[k*;K], [v*;V]", "configs/kv_bias/tinyllama_60m_kv_bias.yaml"),
    Row("no_bos", DATA, "random window starts, no fixed first token", "configs/reproduce/no_bos.yaml"),
    Row("gate_headwise", BEYOND, "headwise sigmoid output gate", "configs/gate/tinyllama_60m_gate_headwise.yaml"),
    Row("sink_logit", BEYOND, "learned sink logit", "configs/sink_logit.yaml"),
    Row("off_by_one", BEYOND, "softmax off by one", "configs/off_by_one.yaml"),
    Row("sink_token", BEYOND, "learned sink token", "configs/sink_token.yaml"),
)

GPT_OSS = "expected: a slot with its own logit takes the sink (gpt-oss attention sinks)"
EFFECTS = (
    Effect("sigmoid_norm", "sink_1", "30.24 (default 18.18)", UP),
    Effect("sigmoid_no_norm", "sink_1", "0.44", DOWN),
    Effect("elu_no_norm", "sink_1", "0.80", DOWN),
    Effect("elu_kernel_norm", "sink_1", "53.65", UP),
    Effect("decay0", "sink_1", "15.20 (default 0.1: 18.18)", DOWN),
    Effect("decay0.5", "sink_1", "41.08", UP),
    Effect("decay5", "sink_1", "0.01", DOWN),
    Effect("lr_tenth", "sink_1", "1e-4: 2.90 where 8e-4 gives 32.23 at the same steps", DOWN),
    Effect("k_bias", "sink_star", "73.34", UP),
    Effect("k_bias", "sink_1", "0.00", DOWN),
    Effect("v_bias", "sink_1", "17.53", SAME),
    Effect("kv_bias", "sink_star", "72.76", UP),
    Effect("kv_bias", "sink_1", "0.04", DOWN),
    Effect("no_bos", "sink_1", "18.18: the paper's windows start anywhere in the packed text, without a BOS", SAME),
    Effect("gate_headwise", "sink_1", "first-token attention 46.7% -> 4.8%", DOWN, "Qwen gated attention"),
    Effect("sink_logit", "sink_star", "--", UP, GPT_OSS),
    Effect("sink_logit", "sink_1", "--", DOWN, GPT_OSS),
    Effect("off_by_one", "sink_star", "--", UP, "expected: the zero slot takes the sink (Miller's softmax + 1)"),
    Effect("off_by_one", "sink_1", "--", DOWN, "expected: the zero slot takes the sink (Miller's softmax + 1)"),
    Effect("sink_token", "sink_token", "--", UP, "expected: the dedicated token takes the sink (StreamingLLM)"),
    Effect("sink_token", "sink_1", "--", DOWN, "expected: the dedicated token takes the sink (StreamingLLM)"),
)


# ------------------------------------------------------------------------------------------ grid
def run_folder(run: str, scale: str) -> str:
    """The run folder's name, as `run_name` of scripts/lib.sh gives it."""
    return run if scale == PAPER else f"{run}_{scale}"


def select(names: Optional[list[str]] = None) -> list[Row]:
    """The rows named (all without names); an unknown name is refused with the valid ones."""
    if not names:
        return list(GRID)
    known = {row.name: row for row in GRID}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ReproductionError(f"unknown row {', '.join(unknown)}; the grid has {', '.join(known)}")
    return [known[name] for name in names]


def evaluation(run_dir: Path) -> Optional[ProbeResult]:
    """The run's sink_eval.json (written by `sink-eval --costs true`), or None when it is missing or damaged
    (the run is then evaluated again)."""
    path = Path(run_dir) / "sink_eval.json"
    if not path.is_file():
        return None
    try:
        return ProbeResult.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, TypeError):  # not JSON, not an object, or without what an evaluation measures
        return None


def target_step(run_dir: Path, max_step: Optional[int] = None) -> Optional[int]:
    """The step the run trains to: `max_step` when given (a smoke run), else its run.yaml's."""
    if max_step is not None:
        return max_step
    path = Path(run_dir) / "run.yaml"
    if not path.is_file():
        return None
    return (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("max_step")


def measured_under_current_rules(result: ProbeResult) -> bool:
    """The evaluation has the cost columns, its streaming column with today's position rule.

    Evaluations from before the streaming column numbered positions inside the cache count as not done,
    so the next `scripts/reproduce.sh` evaluates those runs again (their training is not repeated).
    """
    costs = result.about.get("costs")
    streaming = costs.get("streaming") if isinstance(costs, dict) else None
    return isinstance(streaming, dict) and "positions" in streaming


def finished_evaluation(run_dir: Path, max_step: Optional[int] = None) -> Optional[ProbeResult]:
    """The run's evaluation when the run is finished: its newest checkpoint reached its last step and was
    evaluated with the costs; None otherwise."""
    result, target, latest = evaluation(run_dir), target_step(run_dir, max_step), find_latest(run_dir)
    done = (
        result is not None
        and measured_under_current_rules(result)
        and target is not None
        and latest is not None
        and (result.about.get("step_count") or 0) >= target
        and Path(result.about.get("checkpoint") or "").resolve() == latest.resolve()
    )
    return result if done else None


def finished(run_dir: Path, max_step: Optional[int] = None) -> bool:
    return finished_evaluation(run_dir, max_step) is not None


def trained(run_dir: Path, max_step: Optional[int] = None) -> bool:
    """The run's newest checkpoint reached the step it trains to (its evaluation may still be missing)."""
    target, latest = target_step(run_dir, max_step), find_latest(run_dir)
    return target is not None and latest is not None and checkpoint_step(latest) >= target


def plan(root: Path, scale: str, names: Optional[list[str]] = None, max_step: Optional[int] = None) -> list[str]:
    """One line per run of the selected rows: run name, config, seed, and its state: `done` (trained and
    evaluated), `evaluate` (trained to its last step, to be evaluated) or `todo` (to train, or resume)."""
    lines = []
    for row in select(names):
        for run, seed in zip(row.runs(), row.seeds):
            folder = Path(root) / run_folder(run, scale)
            state = "done" if finished(folder, max_step) else ("evaluate" if trained(folder, max_step) else "todo")
            lines.append(f"{run} {row.config} {seed} {state}")
    return lines


# --------------------------------------------------------------------------------------- results
@dataclass
class RunResult:
    """What the tables show of one evaluated run."""

    run: str
    folder: Path
    result: ProbeResult
    wall_seconds: Optional[float]
    finished_at: Optional[str]
    machine: Optional[str]

    def rate(self, metric: str) -> Optional[float]:
        return self.result.sink_rates.get(metric)


def train_times(run_dir: Path) -> tuple[Optional[float], Optional[str], Optional[str]]:
    """(training seconds summed over the pieces it ran in, the last piece's date and machine) from the
    train_times.tsv that scripts/reproduce.sh appends to."""
    path = Path(run_dir) / "train_times.tsv"
    if not path.is_file():
        return None, None, None
    pieces = [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines() if line.count("\t") >= 2]
    if not pieces:
        return None, None, None
    return sum(float(seconds) for _, seconds, _ in pieces), pieces[-1][0], pieces[-1][2]


def load_results(root: Path, scale: str, max_step: Optional[int] = None) -> dict[str, RunResult]:
    """Run name -> result, for every finished run of the grid under `root`."""
    results = {}
    for row in GRID:
        for run in row.runs():
            folder = Path(root) / run_folder(run, scale)
            result = finished_evaluation(folder, max_step)
            if result is not None:
                results[run] = RunResult(run, folder, result, *train_times(folder))
    return results


def row_values(row: Row, results: dict[str, RunResult], metric: str) -> list[float]:
    return [value for run in row.runs() if run in results and (value := results[run].rate(metric)) is not None]


def band(scale: str) -> float:
    """The "no change" band in percentage points: one head of the default row's model at `scale`, fixed by
    the scale's config before any run."""
    composed = compose(CONFIGS.parent / select([DEFAULT])[0].config, scale)
    config = Config.from_name(composed["model_name"], **(composed.get("model") or {}))
    return 100.0 / (config.n_layer * config.n_head)


def direction(value: float, default: float, width: float) -> str:
    if value - default > width:
        return UP
    if default - value > width:
        return DOWN
    return SAME


# ----------------------------------------------------------------------------------------- tables
def value_cell(values: list[float], seeds: int) -> str:
    """The mean, with the seeds' range when several ran; what is missing says so."""
    if not values:
        return NOT_RUN
    cell = f"{statistics.mean(values):.2f}"
    if len(values) > 1:
        cell += f" ({min(values):.2f}-{max(values):.2f})"
    if len(values) < seeds:
        cell += f", {len(values)} of {seeds} seeds"
    return cell


def effect_line(effect: Effect, results: dict[str, RunResult], width: float) -> tuple[str, Optional[bool]]:
    """The table line of one effect and whether ours agrees (None when it cannot be told yet)."""
    row = select([effect.row])[0]
    ours = row_values(row, results, effect.metric)
    default = row_values(select([DEFAULT])[0], results, "sink_1")
    seen, agrees = NOT_RUN, None
    if ours and default:
        seen = direction(statistics.mean(ours), statistics.mean(default), width)
        agrees = seen == effect.expected
    verdict = {True: "yes", False: "**no**", None: "--"}[agrees]
    metric = effect.metric.replace("sink_star", "Sink*").replace("sink_token", "Sink_tok").replace("sink_1", "Sink_1")
    return (
        f"| {row.label} | {metric} | {effect.reported} | {effect.expected} | "
        f"{value_cell(ours, len(row.seeds))} | {seen} | {verdict} |"
    ), agrees


def default_line(results: dict[str, RunResult]) -> str:
    row = select([DEFAULT])[0]
    return (
        f"| {row.label} | Sink_1 | 18.18 | -- | {value_cell(row_values(row, results, 'sink_1'), len(row.seeds))} "
        f"| -- | -- |"
    )


def effect_tables(results: dict[str, RunResult], width: float) -> tuple[list[str], dict[str, list]]:
    """One Markdown table per paper table, and each source's verdicts (paper, the rest)."""
    lines: list[str] = []
    verdicts: dict[str, list] = {"paper": [], "other": []}
    header = [
        "| row | metric | reported | reported effect | ours (%, seed range) | our effect | agrees |",
        "|---|---|---|---|---|---|---|",
    ]
    for table in TABLES:
        lines += ["", f"### {table}", "", *header, default_line(results)]
        for effect in EFFECTS:
            if select([effect.row])[0].table == table:
                line, agrees = effect_line(effect, results, width)
                lines.append(line)
                verdicts["paper" if effect.source == "paper" else "other"].append(agrees)
    return lines, verdicts


def count_line(verdicts: dict[str, list]) -> str:
    def told(values: list) -> str:
        measured = [v for v in values if v is not None]
        return f"{sum(measured)} of {len(measured)} measured ({len(values) - len(measured)} {NOT_RUN})"

    return (
        f"**Effects that agree with the paper: {told(verdicts['paper'])}.** "
        f"Beyond the paper, as expected: {told(verdicts['other'])}."
    )


def fmt(value: Optional[float], digits: int = 2) -> str:
    return "--" if value is None else f"{value:,.{digits}f}"


def cost_line(run: str, result: Optional[RunResult]) -> str:
    if result is None:
        return f"| {run} | {NOT_RUN} | | | | | |"
    costs = result.result.about["costs"]
    ratio, layer = peak_activation_ratio(result.result.massive_activations)
    peak = "--" if ratio is None else f"{ratio:,.1f} ({layer})"
    streaming = costs["streaming"]
    keep = f"perplexity_keep_{streaming['n_sink']}"
    return (
        f"| {run} | {peak} | {fmt(costs['kurtosis']['value'], 1)} ({costs['kurtosis']['layer']}) "
        f"| {fmt(costs['max_abs']['value'], 1)} ({costs['max_abs']['layer']}) | {fmt(costs['w8a8']['ratio'], 3)} "
        f"| {fmt(streaming['perplexity_full'])} / {fmt(streaming['perplexity_keep_0'])} / {fmt(streaming[keep])} "
        f"(window {streaming['window']}) | {fmt(result.result.loss, 3)} |"
    )


def cost_table(results: dict[str, RunResult]) -> list[str]:
    lines = [
        "",
        "### What a sink costs",
        "",
        "| run | top-1 / median abs. activation (block) | kurtosis (block) | max abs. activation (block) "
        "| W8A8 / fp32 perplexity | streaming perplexity: full / keep 0 / keep 4 | probe loss |",
        "|---|---|---|---|---|---|---|",
    ]
    return lines + [cost_line(run, results.get(run)) for row in GRID for run in row.runs()]


def run_line(run: str, result: Optional[RunResult]) -> str:
    if result is None:
        return f"| {run} | {NOT_RUN} | | | | |"
    minutes = "--" if result.wall_seconds is None else f"{result.wall_seconds / 60:.1f}"
    return (
        f"| {run} | `{result.result.about.get('checkpoint')}` | {result.result.about.get('tokens_seen') or 0:,} "
        f"| {result.finished_at or '--'} | {result.machine or '--'} | {minutes} |"
    )


def runs_table(results: dict[str, RunResult]) -> list[str]:
    lines = [
        "",
        "### The runs",
        "",
        "| run | checkpoint (`sink-eval --load_from` it with `--costs true`) | tokens | finished | machine "
        "| training minutes |",
        "|---|---|---|---|---|---|",
    ]
    return lines + [run_line(run, results.get(run)) for row in GRID for run in row.runs()]


def render(results: dict[str, RunResult], scale: str) -> str:
    """The generated part of docs/reproduction.md: the count, one table per paper table, costs, runs."""
    width = band(scale)
    tables, verdicts = effect_tables(results, width)
    lines = [count_line(verdicts), "", f'Scale `{scale}`; "no change" band: {width:.2f} percentage points (one head).']
    return "\n".join(lines + tables + cost_table(results) + runs_table(results))


__all__ = [
    "DEFAULT",
    "EFFECTS",
    "GRID",
    "Effect",
    "ReproductionError",
    "Row",
    "RunResult",
    "band",
    "direction",
    "finished",
    "load_results",
    "plan",
    "render",
    "run_folder",
    "select",
    "train_times",
]
