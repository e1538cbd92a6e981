"""Checkpoint files: upstream naming, atomic writes, discovery, pruning, and loading for evaluation.

A checkpoint is one file `<out_dir>/iter-XXXXXX-ckpt.pth` (XXXXXX = optimizer step), loadable with
`torch.load(path, weights_only=False)`, holding the run's whole `state`: `model` (state dict),
`optimizer`, `train_loader` (data loader position), `rng`, `iter_num` (micro-batches), `step_count`
(optimizer steps), `tokens_seen`, `config` (`Config.asdict()`) and `train` (`TrainArgs.to_dict()`,
incl. the data transforms). FSDP runs write the same single file (full state dict, gathered on rank 0).

Writes go to a temporary name first and are renamed into place once complete, so a crash or kill
during a save never leaves a truncated file under a checkpoint name.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Optional, Union

import torch

from lit_gpt.config import Config
from lit_gpt.model import GPT

NAME_RE = re.compile(r"^iter-(\d+)-ckpt\.pth$")
TMP_SUFFIX = ".tmp"


def checkpoint_path(out_dir: Path, step: int) -> Path:
    return Path(out_dir) / f"iter-{step:06d}-ckpt.pth"


def list_checkpoints(out_dir: Union[str, Path]) -> list[Path]:
    """Complete checkpoints of a run, oldest first (by step, not by file time)."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return []
    found = [(int(m.group(1)), path) for path in out_dir.iterdir() if (m := NAME_RE.match(path.name))]
    return [path for _, path in sorted(found)]


def find_latest(out_dir: Union[str, Path]) -> Optional[Path]:
    """The newest complete checkpoint in `out_dir`, or None."""
    checkpoints = list_checkpoints(out_dir)
    return checkpoints[-1] if checkpoints else None


def save_atomic(fabric, path: Path, state: dict[str, Any]) -> None:
    """`fabric.save` to a temporary file, flushed to disk, then renamed to `path` (on every rank's view)."""
    path = Path(path)
    tmp = path.with_name(path.name + TMP_SUFFIX)
    fabric.save(tmp, state)
    fabric.barrier()
    if fabric.global_rank == 0:
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    fabric.barrier()


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def prune(out_dir: Path, keep_last: int) -> list[Path]:
    """Delete all but the newest `keep_last` checkpoints (0 keeps everything); returns what was deleted."""
    if keep_last <= 0:
        return []
    stale = list_checkpoints(out_dir)[:-keep_last]
    for path in stale:
        path.unlink()
    return stale


def load_checkpoint(path: Union[str, Path], device: Union[str, torch.device] = "cpu") -> dict[str, Any]:
    return torch.load(path, map_location=device, weights_only=False)


def load_model(path: Union[str, Path], device: Union[str, torch.device] = "cpu") -> tuple[GPT, dict[str, Any]]:
    """(model in eval mode on `device`, the full checkpoint dict) from a training checkpoint."""
    checkpoint = load_checkpoint(path, device)
    config = Config.from_dict(checkpoint["config"])
    with torch.device("meta"):
        model = GPT(config)
    model.load_state_dict(checkpoint["model"], assign=True)
    return model.to(device).eval(), checkpoint
