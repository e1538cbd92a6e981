"""Metric sinks for training: an append-only CSV that survives resumes, wandb / TensorBoard, the console
progress bar, and throughput (tokens/s, MFU against a per-device peak).

A run folder keeps one dashboard run across restarts: the wandb run id is stored in
`logs/wandb-run-id` and a resumed run continues that run (offline, each restart is another
`logs/wandb/offline-run-*` folder with the same id, which `wandb sync` uploads into one run);
TensorBoard writes to `logs/tensorboard`, hiding what a killed run logged after its last checkpoint.
A run that starts afresh in a folder holding an earlier run's logs (killed before its first checkpoint)
never appends to them: `set_aside_earlier_logs` keeps them under a dated name and the run starts new ones.
"""

from __future__ import annotations

import csv
import io
import math
import os
import time
from argparse import Namespace
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch
from lightning.fabric.loggers import Logger, TensorBoardLogger
from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.fabric.utilities.throughput import get_available_flops

from lit_gpt.core.errors import UserError
from lit_gpt.core.files import write_atomic

CSV_COLUMNS = ("step", "metric", "value")


class CSVMetrics(Logger):
    """`metrics.csv` in long format (step, metric, value), appended to across restarts.

    Long format because training, validation and sink metrics arrive at different steps. A resumed run
    calls `truncate_after(step)` first, which drops rows a killed run logged after its last
    checkpoint, so the file reads as one uninterrupted run.
    """

    def __init__(self, folder: Union[str, Path]) -> None:
        self.path = Path(folder) / "metrics.csv"

    @property
    def name(self) -> str:
        return "csv"

    @property
    def version(self) -> int:
        return 0

    @property
    def root_dir(self) -> str:
        return str(self.path.parent)

    @rank_zero_only
    def truncate_after(self, step: int) -> None:
        if not self.path.is_file():
            return
        rows = [row for row in read_metrics(self.path) if row[0] <= step]
        text = io.StringIO()
        writer = csv.writer(text)
        writer.writerow(CSV_COLUMNS)
        writer.writerows((s, m, repr(v)) for s, m, v in rows)
        write_atomic(self.path, text.getvalue())

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: Optional[int] = None) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.is_file()
        with open(self.path, "a", newline="") as handle:
            writer = csv.writer(handle)
            if new:
                writer.writerow(CSV_COLUMNS)
            writer.writerows((step, name, repr(float(value))) for name, value in metrics.items())

    def log_hyperparams(self, params: Union[dict[str, Any], Namespace], *args: Any, **kwargs: Any) -> None:
        """Hyperparameters live in every checkpoint (`train`, `config`); the CSV holds metrics only."""


class MetricsFileError(UserError):
    """A `metrics.csv` that is not the long-format file the trainer writes."""


EARLIER_LOGS = ("metrics.csv", "logs")


def set_aside_earlier_logs(out_dir: Union[str, Path]) -> list[tuple[Path, Path]]:
    """Rename what an earlier run logged into `out_dir` (`metrics.csv` -> `metrics.earlier-<time>.csv`,
    `logs/` -> `logs.earlier-<time>/`), so a fresh run neither appends to it nor continues its dashboard run;
    returns (old, new) pairs."""
    out_dir = Path(out_dir)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    moved = []
    for name in EARLIER_LOGS:
        path = out_dir / name
        if path.exists():
            kept = out_dir / f"{Path(name).stem}.earlier-{stamp}{Path(name).suffix}"
            path.rename(kept)
            moved.append((path, kept))
    return moved


def read_metrics(path: Union[str, Path]) -> list[tuple[int, str, float]]:
    """Rows (step, metric, value) of a `metrics.csv`.

    A last line without its newline is what a process killed mid-write leaves: it is dropped (a resume
    then rewrites the file without it). Any other malformed line is a `MetricsFileError` naming it.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise MetricsFileError(f"{path} is not a text file; move it away (training starts a new one)") from None
    lines = text.splitlines()
    if not lines or tuple(next(csv.reader(lines[:1]))) != CSV_COLUMNS:
        raise MetricsFileError(f"{path} does not start with the header {','.join(CSV_COLUMNS)}; move it away")
    rows = []
    for number, row in enumerate(csv.reader(lines[1:]), start=2):
        try:
            step, name, value = row
            rows.append((int(step), name, float(value)))
        except ValueError:
            if number == len(lines) and not text.endswith("\n"):
                break
            raise MetricsFileError(f"{path}: line {number} is not step,metric,value; fix or delete that line") from None
    return rows


WANDB_ID_FILE = "wandb-run-id"
STEP = "step"


class WandbMetrics(Logger):
    """One wandb run, created on rank 0 at the first thing logged, in `<folder>/wandb`.

    Offline unless WANDB_API_KEY is set (WANDB_MODE, when set, decides). Project, entity, name and group
    come from WANDB_PROJECT, WANDB_ENTITY, WANDB_NAME and WANDB_RUN_GROUP (scripts/lib.sh sets the name to
    the run's and the group to its sweep's); the tags are `tags` and those of WANDB_TAGS (comma-separated).
    The run id is stored in `<folder>/wandb-run-id`; with `resume` a stored id is continued. Every metric
    is plotted against `step` (the optimizer step), so a resumed run may log a step again.
    """

    def __init__(
        self,
        folder: Union[str, Path],
        name: str,
        tags: Sequence[str] = (),
        resume: bool = False,
        group: Optional[str] = None,
    ) -> None:
        self.folder = Path(folder)
        stored = self.folder / WANDB_ID_FILE
        self.run_id = (stored.read_text().strip() or None) if resume and stored.is_file() else None
        env_tags = [tag.strip() for tag in os.environ.get("WANDB_TAGS", "").split(",") if tag.strip()]
        self.settings: dict[str, Any] = dict(
            project=os.environ.get("WANDB_PROJECT", "attention-sink"),
            entity=os.environ.get("WANDB_ENTITY"),
            name=os.environ.get("WANDB_NAME", name),
            group=os.environ.get("WANDB_RUN_GROUP", group),
            tags=list(dict.fromkeys([*tags, *env_tags])),
            dir=str(self.folder),
            resume="allow",
            mode=wandb_mode(),
        )
        self._run: Any = None  # a wandb Run once started

    @property
    def name(self) -> str:
        return "wandb"

    @property
    def version(self) -> str:
        return self.run_id or ""

    @property
    def root_dir(self) -> str:
        return str(self.folder)

    @property
    @rank_zero_experiment
    def experiment(self):
        if self._run is None:
            import wandb

            self.folder.mkdir(parents=True, exist_ok=True)
            self._run = wandb.init(id=self.run_id, **self.settings)
            self._run.define_metric(STEP)
            self._run.define_metric("*", step_metric=STEP)
            self.run_id = self._run.id
            write_atomic(self.folder / WANDB_ID_FILE, self.run_id + "\n")
        return self._run

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, Any], step: Optional[int] = None) -> None:
        self.experiment.log(dict(metrics) if step is None else {**metrics, STEP: step})

    @rank_zero_only
    def log_hyperparams(self, params: Union[dict[str, Any], Namespace], *args: Any, **kwargs: Any) -> None:
        self.experiment.config.update(params, allow_val_change=True)

    @rank_zero_only
    def log_summary(self, values: dict[str, Any]) -> None:
        self.experiment.summary.update(values)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        """Finish the run (marked failed unless `status` is "success") and stop wandb's service process: it
        completes the run's files only as it stops, and none of it should outlive the run."""
        if self._run is not None:
            import wandb

            self._run.finish(exit_code=0 if status == "success" else 1)
            self._run = None
            wandb.teardown()


def wandb_mode() -> str:
    return os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")


class TensorBoardMetrics(TensorBoardLogger):
    """TensorBoard events in `<folder>/tensorboard`, the same folder across restarts of a run."""

    def __init__(self, folder: Union[str, Path]) -> None:
        super().__init__(root_dir=str(folder), name="", version="tensorboard", default_hp_metric=False)

    def truncate_after(self, step: int) -> None:
        """Hide the events a killed run wrote after `step` (before anything is logged again)."""
        self._kwargs["purge_step"] = step + 1


def dashboard_logger(
    kind: str, log_dir: Path, run_name: str, tags: Sequence[str] = (), resume: bool = False
) -> Optional[Logger]:
    """The optional dashboard: wandb (`WandbMetrics`) or TensorBoard; None for `csv`/`none`."""
    if kind == "tensorboard":
        return TensorBoardMetrics(log_dir)
    if kind == "wandb":
        return WandbMetrics(log_dir, run_name, tags, resume)
    return None


def dashboard_tags(config) -> list[str]:
    """Tags of a run: the parts of its attention variant (`Config.variant_summary`) and its model preset."""
    return [*config.variant_summary().split(), f"model:{config.name}"]


def resume_logging(loggers: Sequence[Logger], step: int) -> None:
    """Before a run resumed from the checkpoint of `step` logs anything: drop (CSV) or hide (TensorBoard)
    what the interrupted run logged after it. wandb keeps it; its plots are against the step."""
    for logger in loggers:
        if isinstance(logger, (CSVMetrics, TensorBoardMetrics)):
            logger.truncate_after(step)


def takes_images(logger: Optional[Logger]) -> bool:
    return isinstance(logger, (WandbMetrics, TensorBoardLogger))


@rank_zero_only
def log_images(logger: Optional[Logger], images: dict[str, Path], step: int) -> None:
    """PNG files, each under its name, at `step` on a wandb or TensorBoard logger; others (CSV) take none."""
    if isinstance(logger, WandbMetrics):
        import wandb

        logger.log_metrics({name: wandb.Image(str(path)) for name, path in images.items()}, step)
    elif isinstance(logger, TensorBoardLogger):
        from PIL import Image

        for name, path in images.items():
            with Image.open(path) as image:
                logger.experiment.add_image(name, np.asarray(image.convert("RGB")), step, dataformats="HWC")


@rank_zero_only
def log_summary(logger: Optional[Logger], values: dict[str, float]) -> None:
    """Final numbers of a run into the wandb run summary (the runs table); other loggers keep the series."""
    if isinstance(logger, WandbMetrics):
        logger.log_summary(values)


def layer_metric(name: str, layer: int) -> str:
    """The series of one layer's sink rate `name`: `sink_1_by_layer/layer_03`."""
    return f"{name}_by_layer/layer_{layer:02d}"


def layer_history(rows: Sequence[tuple[int, str, float]], name: str) -> tuple[list[int], list[list[float]]]:
    """(evaluation steps, rate[layer][evaluation]) of the per-layer series of `name` in `read_metrics` rows."""
    prefix = f"{name}_by_layer/layer_"
    by_step: dict[int, dict[int, float]] = {}
    for step, metric, value in rows:
        if metric.startswith(prefix):
            by_step.setdefault(step, {})[int(metric[len(prefix) :])] = value
    steps = sorted(by_step)
    n_layers = 1 + max((layer for values in by_step.values() for layer in values), default=-1)
    return steps, [[by_step[step].get(layer, math.nan) for step in steps] for layer in range(n_layers)]


def log_report(rows: Sequence[dict], columns: Sequence[str], chart: Path, folder: Path) -> str:
    """A sweep report's table (a wandb Table) and bar chart in a wandb run of its own in `<folder>/wandb`,
    grouped with the sweep's runs (WANDB_RUN_GROUP, else the folder's name without `_report`); every
    refresh of the report logs to the same run. Returns the run's local folder."""
    import wandb

    logger = WandbMetrics(folder, folder.name, tags=("report",), resume=True, group=folder.name.removesuffix("_report"))
    status = "failed"
    try:
        table = wandb.Table(columns=list(columns), data=[[row[c] for c in columns] for row in rows])
        logger.log_metrics({"report/table": table, "report/sink_rates": wandb.Image(str(chart))})
        status = "success"
        return str(Path(logger.experiment.dir).parent)
    finally:
        logger.finalize(status)


def measure_matmul_flops(size: int = 1024, seconds: float = 0.5, device: Union[str, torch.device] = "cpu") -> float:
    """Best fp32 matmul FLOP/s of `device` over about `seconds` (the CPU 'peak' MFU is measured against)."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    torch.mm(a, b)
    best = 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        for _ in range(4):
            torch.mm(a, b)
        if a.device.type == "cuda":
            torch.cuda.synchronize()
        best = max(best, 4 * 2 * size**3 / (time.perf_counter() - start))
    return best


def peak_flops(device: torch.device, dtype: torch.dtype, configured: Optional[float] = None) -> float:
    """Per-device peak FLOP/s: `configured`, else the datasheet value of known GPUs, else measured."""
    if configured:
        return configured
    if device.type == "cuda":
        known = get_available_flops(device, dtype)
        if known:
            return float(known)
    return measure_matmul_flops(device=device)


class Throughput:
    """Tokens/s and MFU over the steps since the last `report` (evaluation and checkpoint time excluded)."""

    def __init__(self, tokens_per_step: int, flops_per_step: float, peak_flops_total: float) -> None:
        self.tokens_per_step = tokens_per_step
        self.flops_per_step = flops_per_step
        self.peak_flops_total = peak_flops_total
        self.elapsed = 0.0
        self.steps = 0
        self.total_elapsed = 0.0
        self.total_steps = 0

    def add(self, seconds: float) -> None:
        self.elapsed += seconds
        self.steps += 1
        self.total_elapsed += seconds
        self.total_steps += 1

    def report(self) -> dict[str, float]:
        """Since the last report; the next one starts counting afresh."""
        speed = self._speed(self.elapsed, self.steps)
        self.elapsed, self.steps = 0.0, 0
        return speed

    def overall(self) -> dict[str, float]:
        """Over every step timed so far (this process's part of the run), for the run's summary."""
        return self._speed(self.total_elapsed, self.total_steps)

    def _speed(self, elapsed: float, steps: int) -> dict[str, float]:
        if not steps:
            return {}
        per_step = elapsed / steps
        return {
            "throughput/tokens_per_sec": self.tokens_per_step / per_step,
            "throughput/mfu": self.flops_per_step / per_step / self.peak_flops_total,
        }


def peak_memory(device: torch.device) -> int:
    """Bytes at the peak: memory allocated on a GPU, or the process's largest resident size on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def dashboard_location(logger: Logger) -> Optional[str]:
    """Where a dashboard logger's run is, for the summary at the end of training (None for the CSV)."""
    if isinstance(logger, WandbMetrics):
        where = f"wandb run {logger.run_id or '(not started)'} ({wandb_mode()}) in {logger.folder / 'wandb'}"
        return where + (
            f"; upload with `wandb sync {logger.folder / 'wandb'}/offline-run-*`" if wandb_mode() == "offline" else ""
        )
    if isinstance(logger, TensorBoardLogger):
        return f"TensorBoard events in {logger.log_dir} (`tensorboard --logdir {logger.log_dir}`)"
    return None
