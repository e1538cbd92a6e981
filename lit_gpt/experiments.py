"""Sweep support for `scripts/`: compose an experiment config into a run, find or build its data, and
write result tables into the sweep docs.

Composition itself (`base:` chains, scales) is `lit_gpt.run_config`; the composed run YAML is written
as one plain file that `pretrain/tinyllama.py --config` loads as it is.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any, Optional

from lit_gpt.data.vocab import vocab_mismatch
from lit_gpt.files import read_text, write_atomic
from lit_gpt.run_config import CONFIGS, PAPER, compose, parse_args, write_run_yaml
from lit_gpt.train_args import TrainArgs

# Where each scale's data lives and how it is built (preprocess/run_preprocess.sh forwards to prepare.py).
DATA = {
    PAPER: {"dir": Path("datasets/hub"), "source": "hub"},
    "cpu": {"dir": Path("datasets/embedded"), "source": "embedded"},
}


def load_composed(path: Path, scale: str = PAPER, extra: Optional[list[str]] = None, root: Path = CONFIGS,
                  out: Optional[Path] = None, overrides: Optional[dict[str, Any]] = None) -> TrainArgs:
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


__all__ = ["DATA", "data_dir", "data_options", "fill_results", "load_composed", "missing_data", "preprocess_command",
           "results_block"]
