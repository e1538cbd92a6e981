"""Checkpoint files: upstream naming, atomic writes, discovery, pruning, and loading for evaluation.

A checkpoint is one file `<out_dir>/iter-XXXXXX-ckpt.pth` (XXXXXX = optimizer step), loadable with
`torch.load(path, weights_only=False)`, holding the run's whole `state`: `model` (state dict),
`optimizer`, `train_loader` (data loader position), `rng`, `iter_num` (micro-batches), `step_count`
(optimizer steps), `tokens_seen`, `config` (`Config.asdict()`) and `train` (`TrainArgs.to_dict()`,
incl. the data transforms). FSDP runs write the same single file (full state dict, gathered on rank 0,
optimizer state keyed by position; `lit_gpt.training.fsdp`).

Reading fails with a `CheckpointError` naming the file (truncated, random bytes, not a training
checkpoint), never an unpickling traceback. Writes go to a temporary name first and are renamed into
place once complete, so a crash or kill during a save never leaves a truncated file under a checkpoint
name.
"""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path
from typing import Any, Optional, Union

import torch
from lightning.fabric.plugins import TorchCheckpointIO

from lit_gpt.core.errors import UserError, one_line
from lit_gpt.core.files import free_space, human_size, is_disk_full
from lit_gpt.model.config import Config
from lit_gpt.model.gpt import GPT

NAME_RE = re.compile(r"^iter-(\d+)-ckpt\.pth$")
TMP_SUFFIX = ".tmp"


def checkpoint_path(out_dir: Path, step: int) -> Path:
    return Path(out_dir) / f"iter-{step:06d}-ckpt.pth"


def checkpoint_step(path: Path) -> int:
    """The step in a checkpoint's name (`iter-000700-ckpt.pth` -> 700)."""
    match = NAME_RE.match(Path(path).name)
    if match is None:
        raise ValueError(f"{path} is not named as a checkpoint (iter-<step>-ckpt.pth)")
    return int(match.group(1))


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


class DirectCheckpointIO(TorchCheckpointIO):
    """`torch.save` straight to the given path. Lightning's default serialises into memory first and then
    copies through a temporary file of fsspec's, which doubles the memory and, on another disk, the space a
    save needs; `save_atomic` already writes to a temporary name in the run folder."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Optional[Any] = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage options")
        torch.save(checkpoint, path)


class CheckpointWriteError(UserError):
    """A checkpoint could not be written (no room on the disk); earlier checkpoints are intact."""


def temporary_path(path: Path) -> Path:
    return Path(path).with_name(Path(path).name + TMP_SUFFIX)


def remove_temporaries(out_dir: Path) -> list[Path]:
    """Remove what saves killed midway left in a run folder (only the run folder's owner may call it)."""
    stale = sorted(Path(out_dir).glob(f"iter-*-ckpt.pth{TMP_SUFFIX}")) if Path(out_dir).is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def checkpoint_bytes(out_dir: Path, n_parameters: int) -> int:
    """About what the next checkpoint of a run takes on disk: the newest one's size, or before the first one,
    the fp32 weights and AdamW's two moments (12 bytes a parameter) and 5% for the rest."""
    latest = find_latest(out_dir)
    return latest.stat().st_size if latest is not None else int(n_parameters * 12 * 1.05)


def save_atomic(fabric, path: Path, state: dict[str, Any], needed: Optional[int] = None) -> None:
    """`fabric.save` to a temporary file, flushed to disk, then renamed to `path` (on every rank's view).

    Rank 0 first checks that the disk has `needed` bytes free (when given). A write that fails on any rank
    is agreed on by all, so none waits forever at a barrier; the temporary is removed, and a full disk
    raises `CheckpointWriteError` naming the file and the space, any other failure itself."""
    path = Path(path)
    tmp = temporary_path(path)
    failure: Optional[BaseException] = None
    try:
        if fabric.global_rank == 0 and needed is not None and free_space(path.parent) < needed:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        fabric.save(tmp, state)
        if fabric.global_rank == 0:
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
    except (OSError, RuntimeError) as caught:  # torch's zip writer reports a failed write as RuntimeError
        failure = caught
    if fabric.strategy.reduce_boolean_decision(failure is not None, all=False):
        reported = _save_failure(path, failure, needed)  # before the temporary goes: a full disk still shows
        if fabric.global_rank == 0:
            tmp.unlink(missing_ok=True)
        raise reported
    if fabric.global_rank == 0:
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    fabric.barrier()


# Less than this free after a failed write means the write ran out of room (torch does not say why).
NEARLY_FULL = 1 << 20


def _save_failure(path: Path, failure: Optional[BaseException], needed: Optional[int]) -> BaseException:
    if failure is None:
        return CheckpointWriteError(f"another process failed to write checkpoint {path}; see its error")
    no_room = free_space(path.parent) < max(needed or 0, NEARLY_FULL)
    if not (is_disk_full(failure) or no_room):
        return failure
    need = f"it needs about {human_size(needed)} and " if needed is not None else ""
    free = free_space(path.parent) + (temporary_path(path).stat().st_size if temporary_path(path).exists() else 0)
    return CheckpointWriteError(
        f"no space left to save checkpoint {path}: {need}{human_size(free)} "
        f"are free on that disk; free some space (or keep fewer checkpoints with --keep_last) "
        f"and continue with --resume auto. Earlier checkpoints are intact; no partial file was "
        f"left"
    )


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


class CheckpointError(UserError):
    """A checkpoint file is missing, unreadable (truncated, not a torch file) or not a training checkpoint."""


# Entries every training checkpoint has; their absence means the file is something else.
REQUIRED = ("model", "config")


def read_checkpoint(
    path: Union[str, Path], device: Union[str, torch.device] = "cpu", mmap: bool = False
) -> dict[str, Any]:
    """The checkpoint dict of a training checkpoint file; `CheckpointError` naming the file otherwise.

    `mmap=True` maps tensors instead of reading them: a cheap check that a file is complete before
    a long resume commits to it.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(
            f"{path} is a folder; pass one of its iter-*-ckpt.pth files (report.py takes run folders)"
        )
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; pass a .pth file a training run saved")
    try:
        checkpoint = torch.load(path, map_location=device, weights_only=False, mmap=mmap)
    except Exception as error:  # a truncated or foreign file fails in the zip reader, pickle, or torch itself
        reason = one_line(error)[:120]
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({type(error).__name__}: {reason}); it is truncated "
            f"or not a torch checkpoint: pass another checkpoint"
        ) from None
    missing = [key for key in REQUIRED if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get(key), dict)]
    if missing:
        raise CheckpointError(
            f"{path} is not a training checkpoint (no {', '.join(missing)} mapping); pass a .pth "
            f"file a training run saved"
        )
    return checkpoint


def load_model(path: Union[str, Path], device: Union[str, torch.device] = "cpu") -> tuple[GPT, dict[str, Any]]:
    """(model in eval mode on `device`, the full checkpoint dict) from a training checkpoint."""
    checkpoint = read_checkpoint(path, device)
    config = Config.from_saved(checkpoint["config"])
    with torch.device("meta"):
        model = GPT(config)
    try:
        model.load_state_dict(checkpoint["model"], assign=True)
    except (RuntimeError, TypeError, AttributeError) as error:
        raise CheckpointError(
            f"the weights in {path} do not fit the model config it stores "
            f"({one_line(error)[:120]}); the file is damaged"
        ) from None
    return model.to(device).eval(), checkpoint


def check_resumable(path: Path, state: dict[str, Any], config: Config) -> None:
    """Refuse, before anything is loaded into `state`, a checkpoint that lacks one of its entries (a file
    saved by another tool) or was trained with another model config (its tensors would not fit)."""
    saved = read_checkpoint(path, mmap=True)
    missing = [key for key in state if key not in saved]
    if missing:
        raise CheckpointError(
            f"{path} lacks {', '.join(missing)}: it was not saved by this trainer, so a run cannot "
            f"resume from it; start a fresh run (or load its weights for evaluation only)"
        )
    ours = config.asdict()
    differs = {key: value for key, value in Config.from_saved(saved["config"]).asdict().items() if value != ours[key]}
    if differs:
        changes = ", ".join(f"{key}={value!r} (now {ours[key]!r})" for key, value in differs.items())
        raise CheckpointError(
            f"{path} was trained with another model config: {changes}; resume with the same model "
            f"settings or choose another --out_name"
        )


def first_readable(candidates: list[Path], say) -> Optional[Path]:
    """The first of `candidates` (newest first) that reads as a checkpoint; each one skipped is reported
    through `say`. None when there are no candidates; `CheckpointError` when none is readable, so a run
    never starts over silently."""
    problems = []
    for path in candidates:
        try:
            read_checkpoint(path, mmap=True)
            return path
        except CheckpointError as error:
            problems.append(str(path))
            say(f"warning: {error}; trying an older checkpoint")
    if problems:
        raise CheckpointError(
            f"no readable checkpoint among {', '.join(problems)}; move them away to start over, or pass --resume PATH"
        )
    return None
