"""Sweep support for `scripts/`: compose an experiment config into a run, find or build its data, and
write result tables into the sweep docs.

Composition itself (`base:` chains, scales) is `lit_gpt.training.run_config`; the composed run YAML is written
as one plain file that `pretrain/tinyllama.py --config` loads as it is.
"""

from __future__ import annotations

import re
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional

from lit_gpt.core.files import read_text, write_atomic
from lit_gpt.data.vocab import vocab_mismatch
from lit_gpt.model.flops import flops_per_token, num_parameters
from lit_gpt.training.run_config import CONFIGS, PAPER, compose, parse_args, write_run_yaml
from lit_gpt.training.train_args import TrainArgs

# Where each scale's data lives and how it is built (preprocess/run_preprocess.sh forwards to prepare.py).
DATA: dict[str, dict[str, Any]] = {
    PAPER: {"dir": Path("datasets/hub"), "source": "hub"},
    "cpu": {"dir": Path("datasets/embedded"), "source": "embedded"},
}


def load_composed(
    path: Path,
    scale: str = PAPER,
    extra: Optional[list[str]] = None,
    root: Path = CONFIGS,
    out: Optional[Path] = None,
    overrides: Optional[dict[str, Any]] = None,
) -> TrainArgs:
    """Compose, write (to `out`, or a temporary file) and parse with the trainer's own parser and checks;
    `overrides` are run-YAML keys set last (e.g. the data folder a script was given)."""
    values = {**compose(path, scale, root), **(overrides or {})}
    argv = list(extra or [])
    if out is not None:
        written = write_run_yaml(values, out, f"{path} at scale {scale}")
        return parse_args(["--config", str(written), *argv], exit_on_error=False)
    with tempfile.TemporaryDirectory() as folder:
        written = write_run_yaml(values, Path(folder) / "run.yaml")
        return parse_args(["--config", str(written), *argv], exit_on_error=False)


# ------------------------------------------------------------------------------------------ data
def data_dir(scale: str) -> Path:
    return DATA.get(scale, DATA["cpu"])["dir"]


def data_options(scale: str, root: Path = CONFIGS) -> dict[str, Any]:
    """`preprocess/prepare.py` options that build the data of `scale`: its source and, for a corpus the
    preprocessing trains a tokenizer on, the vocabulary size of the scale's model."""
    source = DATA.get(scale, DATA["cpu"])["source"]
    if source == "hub":
        return {"source": source}
    vocab = load_composed(Path(root) / scale / "base.yaml", PAPER, root=root).model_config().vocab_size
    return {"source": source, "vocab_size": vocab}


def preprocess_command(scale: str, out_dir: Optional[Path] = None, root: Path = CONFIGS) -> str:
    """The command that builds the data of `scale` (into `out_dir` when that is not the usual folder)."""
    options = data_options(scale, root)
    command = "bash preprocess/run_preprocess.sh"
    if options["source"] != "hub":
        command += "".join(f" --{key} {value}" for key, value in options.items())
    if out_dir is not None and Path(out_dir) != data_dir(scale):
        command += f" --output_dir {out_dir}"
    return command


def missing_data(train_data_dir: Path, probe_file: Optional[Path], vocab_size: Optional[int] = None) -> Optional[str]:
    """What is missing for a run on `train_data_dir` (and the probe set), or None. With `vocab_size`, shards
    whose tokenizer (`meta.json`) has more entries than the model's vocabulary count as missing."""
    folder = Path(train_data_dir)
    if not folder.is_dir() or not any(folder.glob("train_*")):
        return f"no training shards in {folder}"
    mismatch = vocab_mismatch(folder, vocab_size) if vocab_size is not None else None
    if mismatch:
        return mismatch
    if probe_file is not None and not Path(probe_file).is_file():
        return f"no probe set at {probe_file}"
    return None


# ------------------------------------------------------------------------------------------ plans and ETAs
# The share of the measured fp32 matmul peak a cpu-scale run gets end to end (compilation, evaluation and
# checkpoints included): 0.49-0.60 in the four timed demos of README.md.
CPU_EFFICIENCY = 0.5


def training_flops(args: TrainArgs) -> float:
    """FLOPs of the whole run: every optimizer step's tokens, forward and backward."""
    block = args.model_config().block_size
    return flops_per_token(args.model_config(), block) * args.global_batch_size * block * args.max_step


def parameter_count(config) -> str:
    total = num_parameters(config)["total"]
    return f"{total / 1e9:,.2f}B" if total >= 1e9 else f"{total / 1e6:,.2f}M"


def stand_in_plan(config: Path, scale: str, scaled: TrainArgs, paper: TrainArgs, peak: float) -> str:
    """What a run at a scale other than the paper's trains instead of the paper's run, and about how long it
    takes at `peak` FLOP/s: said before it starts, so nobody mistakes the stand-in for the real thing."""
    model, paper_model = scaled.model_config(), paper.model_config()
    tokens = scaled.global_batch_size * model.block_size
    minutes = training_flops(scaled) / (peak * CPU_EFFICIENCY) / 60
    return (
        f"{config} at scale {scale} is a stand-in for the paper's {paper_model.name} "
        f"({parameter_count(paper_model)} parameters, {paper.max_step:,} steps): it trains "
        f"{model.name} ({parameter_count(model)} parameters, {model.variant_summary()}) "
        f"for {scaled.max_step:,} steps x {tokens:,} tokens, about {minutes:,.1f} min at {peak / 1e9:,.0f} "
        f"GFLOP/s fp32 matmul peak (SCALE=paper runs the paper's setup)"
    )


STEP_LINE = re.compile(
    r"^\[(?P<run>[^\]]+)\] step (?P<step>\d+)/(?P<max>\d+) \|.*\| (?P<rate>[\d.]+) tok/s "
    r"\| mfu (?P<mfu>[\d.]+)%"
)


def step_rates(lines: Iterable[tuple[float, str]]) -> Iterator[dict[str, dict[str, float]]]:
    """For each timed line of the demo's runs (arrival time, `[run] step S/M | ... | R tok/s | mfu U%`), the
    runs' latest two step lines so far: {run: {step, max, rate, mfu, seconds_per_step}} once a run has two."""
    seen: dict[str, dict[str, float]] = {}
    for arrived, line in lines:
        match = STEP_LINE.match(line)
        if not match:
            continue
        run, step = match["run"], int(match["step"])
        earlier = seen.get(run)
        seen[run] = {
            "step": step,
            "max": int(match["max"]),
            "rate": float(match["rate"]),
            "mfu": float(match["mfu"]),
            "arrived": arrived,
        }
        if earlier and step > earlier["step"]:
            seen[run]["seconds_per_step"] = (arrived - earlier["arrived"]) / (step - earlier["step"])
        yield {name: entry for name, entry in seen.items() if "seconds_per_step" in entry}


def demo_eta(runs: dict[str, dict[str, float]], now: float, after_training: float, peak: float, share: float) -> str:
    """The ETA line of the demo: when its concurrent runs end (the slowest, at its own pace so far), the
    whole demo with `after_training` seconds of evaluation, and the tokens/s and share of the machine's
    `peak` the runs get together (each run's MFU is against its `share` of the peak)."""
    training_end = max(now + (entry["max"] - entry["step"]) * entry["seconds_per_step"] for entry in runs.values())
    demo_end = training_end + after_training
    rates = ", ".join(f"{name} {entry['rate']:,.0f}" for name, entry in runs.items())
    together = sum(entry["rate"] for entry in runs.values())
    used = sum(entry["mfu"] for entry in runs.values()) * share
    clock = time.strftime("%H:%M", time.localtime(demo_end))
    return (
        f"ETA: the demo ends in about {(demo_end - now) / 60:,.0f} min (around {clock}), training in "
        f"{(training_end - now) / 60:,.0f}; tokens/s {rates}, together {together:,.0f} = {used:.0f}% of the "
        f"{peak / 1e9:,.0f} GFLOP/s fp32 matmul peak measured before the start"
    )


def follow(path: Path, stop_line: str, alive: Callable[[], bool], poll: float = 1.0) -> Iterator[tuple[float, str]]:
    """The lines appended to `path` (from its start) as they arrive, each with its arrival time, up to
    `stop_line`, or up to the end of the file once `alive()` is false: a writer that died before writing
    the stop line must not leave its follower waiting for ever."""
    with open(path, encoding="utf-8", errors="replace") as stream:
        pending = ""
        while True:
            chunk = stream.readline()
            if not chunk:
                if not alive():
                    return
                time.sleep(poll)
                continue
            pending += chunk
            if pending.endswith("\n"):
                line, pending = pending.rstrip("\n"), ""
                if line == stop_line:
                    return
                yield time.time(), line


# ------------------------------------------------------------------------------------------ docs
def results_block(key: str) -> tuple[str, str]:
    return f"<!-- results: {key} -->", "<!-- /results -->"


def fill_results(doc: Path, key: str, table: str) -> bool:
    """Replace the results block `key` of a Markdown doc by `table`; False when the doc has no such block."""
    start, end = results_block(key)
    text = read_text(doc, "--doc")
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    if not pattern.search(text):
        return False
    write_atomic(doc, pattern.sub(lambda _: f"{start}\n{table.strip()}\n{end}", text, count=1))
    return True


__all__ = [
    "CPU_EFFICIENCY",
    "DATA",
    "data_dir",
    "data_options",
    "demo_eta",
    "fill_results",
    "follow",
    "load_composed",
    "missing_data",
    "preprocess_command",
    "results_block",
    "stand_in_plan",
    "step_rates",
    "training_flops",
]
