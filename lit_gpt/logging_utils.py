"""Metric sinks for training: an append-only CSV that survives resumes, wandb / TensorBoard, the console
progress bar, and throughput (tokens/s, MFU against a per-device peak).
"""

from __future__ import annotations

import csv
import io
import os
import time
from pathlib import Path
from typing import Any, Optional, Union

import torch
from lightning.fabric.loggers import Logger, TensorBoardLogger
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.fabric.utilities.throughput import get_available_flops

from lit_gpt.errors import UserError
from lit_gpt.files import write_atomic

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

    def log_hyperparams(self, params: dict[str, Any], *args: Any, **kwargs: Any) -> None:
        """Hyperparameters live in every checkpoint (`train`, `config`); the CSV holds metrics only."""


class MetricsFileError(UserError):
    """A `metrics.csv` that is not the long-format file the trainer writes."""


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


def dashboard_logger(kind: str, log_dir: Path, run_name: str) -> Optional[Logger]:
    """The optional dashboard: wandb (project/entity/name from WANDB_* env, as upstream scripts export
    them; offline unless WANDB_API_KEY is set) or TensorBoard; None for `csv`/`none`."""
    if kind == "tensorboard":
        return TensorBoardLogger(root_dir=str(log_dir), name="tensorboard")
    if kind == "wandb":
        from lightning.pytorch.loggers import WandbLogger

        return WandbLogger(project=os.environ.get("WANDB_PROJECT", "attention-sink"),
                           entity=os.environ.get("WANDB_ENTITY"), name=os.environ.get("WANDB_NAME", run_name),
                           save_dir=str(log_dir), offline="WANDB_API_KEY" not in os.environ)
    return None


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

    def add(self, seconds: float) -> None:
        self.elapsed += seconds
        self.steps += 1

    def report(self) -> dict[str, float]:
        if not self.steps:
            return {}
        per_step = self.elapsed / self.steps
        self.elapsed, self.steps = 0.0, 0
        return {"throughput/tokens_per_sec": self.tokens_per_step / per_step,
                "throughput/mfu": self.flops_per_step / per_step / self.peak_flops_total}

