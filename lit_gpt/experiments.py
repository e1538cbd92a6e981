"""The experiments of `configs/`: one run YAML per run, composed from small layers at a chosen scale.

A YAML under `configs/` holds only what differs from its base, which it names with `base:` (a path
relative to the file); `configs/tinyllama_60m.yaml` is the root. The files that pick the model preset
(`model_name`: the 60M and 1B setups) describe the paper's setup: model, data, batch, schedule, devices.
A scale other than `paper` replaces that setup with the chain of `configs/<scale>/base.yaml`, laid right
after the last setup file and under the variant files, so a sweep YAML changes the same key at every
scale. A file's `<scale>:` section holds the values that must differ at that scale (a batch size
relative to the scale's default, a window relative to its block) and is applied right after the file.
For `configs/lr/tinyllama_60m_lr1e-3.yaml` at scale `cpu` the layers are

    TrainArgs defaults < tinyllama_60m.yaml < data/embedded.yaml < cpu/base.yaml < lr/..._lr1e-3.yaml
                       < its `cpu:` section < command line

Every layer is read with the trainer's own key rules (`lit_gpt.train_args.normalize_run_yaml`), and the
composition is written as one plain run YAML that `pretrain/tinyllama.py --config` loads as it is.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any, Optional

import yaml

from lit_gpt.data.vocab import vocab_mismatch
from lit_gpt.files import write_atomic
from lit_gpt.train_args import ArgsError, TrainArgs, normalize_run_yaml, parse_args, read_yaml_mapping

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
PAPER = "paper"
BASE_KEY = "base"
# Where each scale's data lives and how it is built (preprocess/run_preprocess.sh forwards to prepare.py).
DATA = {
    PAPER: {"dir": Path("datasets/hub"), "source": "hub"},
    "cpu": {"dir": Path("datasets/embedded"), "source": "embedded"},
}


def scales(root: Path = CONFIGS) -> list[str]:
    """`paper` and every folder of `root` holding a `base.yaml`."""
    return [PAPER] + sorted(path.parent.name for path in Path(root).glob("*/base.yaml"))


def chain(path: Path) -> list[Path]:
    """`path` and its bases, root first."""
    files: list[Path] = []
    path = Path(path).resolve()
    while True:
        if path in files:
            raise ArgsError(f"{path} is its own base (through {', '.join(map(str, files))})")
        files.insert(0, path)
        base = read_yaml_mapping(path).get(BASE_KEY)
        if base is None:
            return files
        path = (path.parent / base).resolve()


def _layers(path: Path, known_scales: list[str], scale: str) -> list[dict[str, Any]]:
    """Parser-keyed values of `path` and of its `scale` section, validated by the trainer's rules."""
    raw = read_yaml_mapping(path)
    own = {key: value for key, value in raw.items() if key != BASE_KEY and key not in known_scales}
    layers = [normalize_run_yaml(own, str(path))]
    section = raw.get(scale)
    if scale != PAPER and section is not None:
        if not isinstance(section, dict):
            raise ArgsError(f"{path}: the '{scale}:' section must map keys to values")
        layers.append(normalize_run_yaml(section, f"{path} ({scale}: section)"))
    return layers


def compose(path: Path, scale: str = PAPER, root: Path = CONFIGS) -> dict[str, Any]:
    """The run YAML (a nested mapping) of config `path` at `scale`; see the module docstring."""
    known = scales(root)
    if scale not in known:
        raise ArgsError(f"unknown scale {scale!r}; valid scales: {', '.join(known)}")
    files = chain(path)
    if scale != PAPER:
        setup = max(index for index, file in enumerate(files) if index == 0 or "model_name" in read_yaml_mapping(file))
        files[setup + 1:setup + 1] = chain(Path(root) / scale / "base.yaml")
    values: dict[str, Any] = {}
    for file in files:
        for layer in _layers(file, known, scale):
            values.update(layer)
    return _nest(values)


def _nest(values: dict[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {key: value for key, value in values.items() if not key.startswith("model.")}
    model = {key.removeprefix("model."): value for key, value in values.items() if key.startswith("model.")}
    if model:
        nested["model"] = model
    return nested


def write_run_yaml(values: dict[str, Any], out: Path, sources: str = "") -> Path:
    header = f"# Composed from {sources}; edit the configs/ files, not this one.\n" if sources else ""
    return write_atomic(out, header + yaml.safe_dump(values, sort_keys=False))


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
    text = Path(doc).read_text()
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    if not pattern.search(text):
        return False
    write_atomic(doc, pattern.sub(lambda _: f"{start}\n{table.strip()}\n{end}", text, count=1))
    return True


__all__ = ["CONFIGS", "DATA", "PAPER", "chain", "compose", "data_dir", "data_options", "fill_results", "load_composed",
           "missing_data", "preprocess_command", "results_block", "scales", "write_run_yaml"]
