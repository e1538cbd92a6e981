"""Pretraining: setup -> fit -> validate, on Lightning Fabric.

`setup(args)` builds Fabric (accelerator auto; strategy auto | ddp | fsdp, the last FSDP2 as
`lit_gpt.training.fsdp` sets it up, on GPUs and CPUs alike; precision bf16-mixed on capable GPUs, 32-true
otherwise) and runs `main` on every process. `main` builds data, model and optimizer, restores the
run's single `state` dict when resuming, and calls `fit`, which trains with gradient accumulation,
validates every `eval_step_interval` steps (loss/ppl per domain and the sink metric on the probe set)
and checkpoints atomically every `save_step_interval` steps.

Resume is exact: the state holds the model, optimizer, data-loader position (a pure function of the
step, see `lit_gpt.data.loader`) and RNG states, so a resumed run computes what an uninterrupted one
would have, batch for batch. SIGTERM/SIGINT (e.g. cluster preemption) finish the current step, save
and return; a non-finite loss stops the run before the optimizer applies it, so the newest checkpoint
on disk is the last good one.

A run owns its folder: the process that becomes rank 0 holds the folder's lock (`lit_gpt.core.locks`) from
before the first check to the end, so a second run into the same folder is refused in one line. A
fresh start never appends to what an earlier run left there: its `metrics.csv` and `logs/` are set
aside under a dated name first (`lit_gpt.training.loggers.set_aside_earlier_logs`).
"""

from __future__ import annotations

import math
import os
import random
import re
import signal
import tempfile
import time
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, Iterator, Optional, cast

import lightning as L
import numpy as np
import torch
from lightning.fabric.connector import _is_using_cli
from lightning.fabric.loggers import Logger
from tqdm import tqdm

from lit_gpt.core.errors import UserError
from lit_gpt.core.files import OutputError, human_size, output_folder
from lit_gpt.core.locks import LOCK_FILE, exclusive
from lit_gpt.data import DataError, build_train_loader, build_valid_loaders, load_probe_windows
from lit_gpt.data.stream import INDEX, open_stream
from lit_gpt.data.vocab import recorded_vocab_size, vocab_mismatch
from lit_gpt.measurement.analysis import evaluate_gpt
from lit_gpt.measurement.evaluation import metric_label
from lit_gpt.measurement.loss import ignored_predictions, lm_loss, prediction_mask, split_batch
from lit_gpt.measurement.metrics import LAYER_SERIES
from lit_gpt.measurement.plots import attention_heatmaps, layer_history_heatmap, norms_by_position
from lit_gpt.measurement.probe_result import ProbeResult
from lit_gpt.model.config import Config
from lit_gpt.model.flops import estimated_flops_per_step, num_parameters
from lit_gpt.model.gpt import GPT, Block
from lit_gpt.training.checkpoint import (
    DirectCheckpointIO,
    check_resumable,
    checkpoint_bytes,
    checkpoint_path,
    find_latest,
    first_readable,
    list_checkpoints,
    prune,
    read_checkpoint,
    remove_temporaries,
    save_atomic,
)
from lit_gpt.training.fsdp import FSDP2Strategy, full_tensor
from lit_gpt.training.loggers import (
    CSVMetrics,
    Throughput,
    dashboard_location,
    dashboard_logger,
    dashboard_tags,
    layer_history,
    layer_metric,
    log_images,
    log_summary,
    peak_flops,
    peak_memory,
    read_metrics,
    resume_logging,
    set_aside_earlier_logs,
    takes_images,
)
from lit_gpt.training.optim import learning_rate_at, make_optimizer, set_learning_rate
from lit_gpt.training.train_args import ArgsError, TrainArgs

PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGINT)
SHARD_INDEX_RE = re.compile(r"[-_]\d+$")


class TrainingError(UserError, RuntimeError):
    """The run cannot continue; the message says why and what is left on disk."""


# ------------------------------------------------------------------------------------------ setup
def default_precision() -> str:
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


def make_strategy(args: TrainArgs):
    if args.strategy == "fsdp":
        return FSDP2Strategy()
    return args.strategy


def make_fabric(args: TrainArgs) -> L.Fabric:
    loggers: list[Logger] = [CSVMetrics(args.out_dir)]
    dashboard = dashboard_logger(
        args.logger,
        args.out_dir / "logs",
        args.out_name,
        dashboard_tags(args.model_config()),
        resume=not starts_fresh(args),
    )
    if dashboard is not None:
        loggers.append(dashboard)
    # FSDP2Strategy writes its gathered checkpoint itself; the other strategies take the direct writer.
    plugins: list[Any] = [] if args.strategy == "fsdp" else [DirectCheckpointIO()]
    precision: Any = args.precision or default_precision()  # a precision name TrainArgs checked
    return L.Fabric(
        accelerator="auto",
        devices=args.devices,
        num_nodes=args.num_nodes,
        strategy=make_strategy(args),
        precision=precision,
        loggers=loggers,
        plugins=plugins,
    )


def setup(args: TrainArgs) -> None:
    """Run the training described by `args` on every process Fabric manages (or was launched with)."""
    args.validate()
    finished = finished_checkpoint(args)
    if finished is not None:
        print(
            f"{args.out_dir} has finished already: its checkpoint {finished.name} has reached --max_step "
            f"{args.max_step}, so there is nothing to do (raise --max_step to train on, or choose another --out_name)"
        )
        return
    check_data_dirs(args)
    with owning_run_folder(args):
        fabric = make_fabric(args)
        check_world_size(fabric, args)
        if _is_using_cli():  # `fabric run` started every process and Fabric joined them up; launching is refused
            main(fabric, args)
        else:
            fabric.launch(partial(main, args=args))


def becomes_rank_zero() -> bool:
    """Whether this process is, or will launch, global rank 0: the launchers (torchrun, `fabric run`, SLURM,
    Fabric's own for the processes it starts) give every other process a non-zero rank in the environment."""
    return all(
        os.environ.get(name, "0") == "0" for name in ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID")
    )


@contextmanager
def owning_run_folder(args: TrainArgs) -> Iterator[None]:
    """On the process that becomes rank 0: hold the run folder's lock for the whole run, remove what a killed
    save left there and, for a fresh start, set an earlier run's logs aside. Other processes only check."""
    if not becomes_rank_zero():
        check_out_dir(args)
        yield
        return
    check_not_a_file(args)
    created = not args.out_dir.exists()
    output_folder(args.out_dir)
    try:
        with exclusive(
            args.out_dir / LOCK_FILE,
            f"run folder {args.out_dir}",
            "wait for that run to end, or choose another --out_name (nothing was changed)",
        ):
            check_out_dir(args)
            remove_temporaries(args.out_dir)
            if starts_fresh(args):
                for earlier, kept in set_aside_earlier_logs(args.out_dir):
                    print(
                        f"{earlier} is an earlier run's (no checkpoint to continue); kept as {kept}, this run "
                        f"starts a new one"
                    )
            yield
    except BaseException:
        if created:
            remove_if_empty(args.out_dir)
        raise


def remove_if_empty(folder: Path) -> None:
    """Take back a run folder this run created when it stopped before writing anything there (a setting
    refused once Fabric was built), so a refused run leaves no trace."""
    try:
        folder.rmdir()
    except OSError:  # it holds something (logs, checkpoints): that stays
        pass


def finished_checkpoint(args: TrainArgs) -> Optional[Path]:
    """The checkpoint of a run that continues its folder (`--resume auto` or `True`) and has reached
    `--max_step` there already; None when there is training left to do (or no readable checkpoint)."""
    latest = find_latest(args.out_dir) if args.resume in (True, "auto") else None
    if latest is None:
        return None
    try:
        done = read_checkpoint(latest, mmap=True).get("step_count", 0) >= args.max_step
    except UserError:  # unreadable: the resume reports it and falls back to an older one
        return None
    return latest if done else None


def starts_fresh(args: TrainArgs) -> bool:
    """Whether the run starts from step 0 rather than continuing a checkpoint of its folder."""
    return args.resume is False or (args.resume == "auto" and not list_checkpoints(args.out_dir))


def check_world_size(fabric: L.Fabric, args: TrainArgs) -> None:
    """FSDP shards over processes: one process has nothing to shard over, and running it anyway would hide
    a mistaken --devices / --num_nodes."""
    strategy: Any = fabric.strategy  # a parallel strategy here, which has process and node counts
    if args.strategy == "fsdp" and strategy.num_processes * strategy.num_nodes == 1:
        raise ArgsError(
            "strategy=fsdp shards the model over processes but this run has one (devices="
            f"{args.devices!r}, num_nodes={args.num_nodes}); pass --devices 2 or more, or --strategy auto"
        )


def check_not_a_file(args: TrainArgs) -> None:
    if args.out_dir.exists() and not args.out_dir.is_dir():
        raise OutputError(f"{args.out_dir} is a file, not a run folder; choose another --out_name or --checkpoint_root")


def check_out_dir(args: TrainArgs) -> None:
    """Refuse, before any process starts, to write where a run cannot or must not: a file in place of the
    run folder, a fresh start over an earlier run's checkpoints (it would overwrite and prune them), or
    a damaged checkpoint named by --resume."""
    check_not_a_file(args)
    existing = list_checkpoints(args.out_dir)
    if args.resume is False and existing:
        raise ArgsError(
            f"{args.out_dir} already holds checkpoints up to {existing[-1].name}; pass --resume auto to "
            f"continue that run, or choose another --out_name (nothing was changed)"
        )
    if isinstance(args.resume, str) and args.resume != "auto":
        read_checkpoint(args.resume, mmap=True)


def gradient_accumulation(global_batch_size: int, micro_batch_size: int, world_size: int) -> int:
    per_step = micro_batch_size * world_size
    if global_batch_size % per_step:
        raise ArgsError(
            f"global_batch_size={global_batch_size} is not a multiple of micro_batch_size * devices = "
            f"{micro_batch_size} * {world_size}; change one of them"
        )
    return global_batch_size // per_step


# ------------------------------------------------------------------------------------------ data
def check_data_dirs(args: TrainArgs) -> None:
    """Fail before any process starts when a data folder or the probe file is missing, or when the shards
    hold token ids the model's vocabulary does not cover."""
    vocab_size = args.model_config().vocab_size
    for flag, folder in (("train_data_dir", args.train_data_dir), ("val_data_dir", args.val_data_dir)):
        if folder is not None and not Path(folder).is_dir():
            raise DataError(
                f"{flag} {folder} does not exist; run `bash preprocess/run_preprocess.sh --source embedded` "
                f"or pass --{flag} pointing at tokenized shards"
            )
        mismatch = vocab_mismatch(folder, vocab_size) if folder is not None else None
        if folder is not None and mismatch:
            raise DataError(
                f"{mismatch}; set --model.vocab_size {recorded_vocab_size(folder)} or use shards built "
                f"with the model's tokenizer"
            )
    if args.eval_sink and (args.probe_file is None or not Path(args.probe_file).is_file()):
        raise DataError(
            f"probe file {args.probe_file} does not exist; build it with preprocess/run_preprocess.sh, "
            "pass --probe_file, or disable the sink metric with --eval_sink false"
        )


def dataset_names(data_dir: Path, split: str) -> list[str]:
    """Datasets of a split in a data folder: litdata folders `<split>_*` and LITPKDS `<split>_*.bin` files."""
    names = {path.name for path in data_dir.glob(f"{split}_*") if (path / INDEX).is_file()}
    names |= {SHARD_INDEX_RE.sub("", path.stem) for path in data_dir.glob(f"{split}_*.bin")}
    if not names:
        raise DataError(
            f"{data_dir} holds no '{split}_*' datasets; run preprocess/run_preprocess.sh or fix the data dir"
        )
    return sorted(names)


def train_mixture(args: TrainArgs) -> dict[str, float]:
    """The YAML's train weights, or every train dataset weighted by its size (plain concatenation)."""
    if args.train:
        return dict(args.train)
    return {
        name: float(open_stream(args.train_data_dir, name).n_tokens)
        for name in dataset_names(args.train_data_dir, "train")
    }


def build_data(fabric: L.Fabric, args: TrainArgs, config: Config):
    """(train loader, {domain: valid loader}, probe windows or None), sharded by rank."""
    transforms = args.input_transforms()
    shard = {
        "rank": fabric.global_rank,
        "world_size": fabric.world_size,
        "seed": args.seed,
        "vocab_size": config.vocab_size,
        "transforms": transforms,
    }
    train = build_train_loader(
        args.train_data_dir,
        train_mixture(args),
        config.block_size,
        args.micro_batch_size,
        downsample_ratio=args.downsample_ratio,
        **shard,
    )
    val_dir = args.val_data_dir or args.train_data_dir
    valid_names = list(args.valid) or dataset_names(val_dir, "valid")
    valid = build_valid_loaders(val_dir, valid_names, config.block_size, args.micro_batch_size, **shard)
    probe = None
    if args.eval_sink:
        # The same transforms (fixed and random tokens) as the evaluation script, so both report alike.
        raw = load_probe_windows(args.probe_file, args.tokenizer or args.train_data_dir, vocab_size=config.vocab_size)
        probe = transforms.apply(raw, config.vocab_size)
    return train, valid, probe


# ------------------------------------------------------------------------------------------ state
class RNGState:
    """Python, NumPy and torch (CPU and CUDA) generators, as one stateful entry of the checkpoint."""

    def state_dict(self) -> dict[str, Any]:
        state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        random.setstate(state["python"])
        np.random.set_state(state["numpy"])
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


def resume_path(resume, out_dir: Path, say=print) -> Optional[Path]:
    """The checkpoint to resume from: a given path as it is; for `True`/`auto` the newest readable one of the
    run (an unreadable newest one is reported and skipped, never a reason to start over)."""
    if resume is False:
        return None
    if resume is True or resume == "auto":
        found = first_readable(list(reversed(list_checkpoints(out_dir))), say)
        if found is None and resume is True:
            raise ArgsError(f"--resume True but {out_dir} holds no checkpoint; use --resume auto to start fresh")
        return found
    return Path(resume)


class StopRequest:
    """Turns SIGTERM/SIGINT into a flag checked between optimizer steps (agreed across ranks)."""

    def __init__(self) -> None:
        self.signal: Optional[int] = None

    def __call__(self, signum, frame) -> None:
        self.signal = signum

    @contextmanager
    def installed(self) -> Iterator["StopRequest"]:
        previous = {sig: signal.signal(sig, self) for sig in PREEMPTION_SIGNALS}
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


# ------------------------------------------------------------------------------------------ model
def build_model(fabric: L.Fabric, config: Config, args: TrainArgs) -> torch.nn.Module:
    """The model set up for the strategy, with the run's attention backend. Every strategy builds the same
    full model from the seed (under FSDP on the CPU, then shards it; see `lit_gpt.training.fsdp`), so runs start
    from the same weights whatever the strategy."""
    with fabric.init_module():
        model = GPT(config, args.attention_runtime())
    if args.activation_checkpointing:
        from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
            CheckpointImpl,
            apply_activation_checkpointing,
            checkpoint_wrapper,
        )

        apply_activation_checkpointing(
            model,
            check_fn=lambda module: isinstance(module, Block),
            checkpoint_wrapper_fn=partial(checkpoint_wrapper, checkpoint_impl=CheckpointImpl.NO_REENTRANT),
        )
    return fabric.setup(cast(torch.nn.Module, torch.compile(model)) if args.compile else model)


def main(fabric: L.Fabric, args: TrainArgs) -> None:
    config = args.model_config()
    accumulation = gradient_accumulation(args.global_batch_size, args.micro_batch_size, fabric.world_size)
    if fabric.global_rank == 0:
        output_folder(args.out_dir)
    fabric.seed_everything(args.seed, verbose=False)
    train_loader, valid_loaders, probe = build_data(fabric, args, config)
    model = build_model(fabric, config, args)
    optimizer = fabric.setup_optimizers(
        make_optimizer(
            model, args.learning_rate, args.weight_decay, (args.beta1, args.beta2), args.decay_norms_and_biases
        )
    )
    state = {
        "model": model,
        "optimizer": optimizer,
        "train_loader": train_loader,
        "rng": RNGState(),
        "iter_num": 0,
        "step_count": 0,
        "tokens_seen": 0,
        "config": config.asdict(),
        "train": args.to_dict(),
    }
    path = resume_path(args.resume, args.out_dir, fabric.print)
    if path is not None:
        check_resumable(path, state, config)
        fabric.print(f"Resuming from {path}")
        fabric.load(path, state, weights_only=False)
        state["config"], state["train"] = config.asdict(), args.to_dict()
        resume_logging(fabric.loggers, state["step_count"])
    for logger in fabric.loggers:
        logger.log_hyperparams({**args.to_dict(), "model_config": config.asdict()})
    counts = num_parameters(config)
    fabric.print(
        f"{config.name} ({config.variant_summary()}), {counts['total']:,} parameters "
        f"({counts['non_embedding']:,} non-embedding), "
        f"{fabric.world_size} process(es), gradient accumulation {accumulation}"
    )
    status = "failed"
    started, first_step = time.perf_counter(), state["step_count"]
    try:
        throughput = fit(fabric, state, train_loader, valid_loaders, probe, args, accumulation)
        status = "success"
    finally:
        for logger in fabric.loggers:
            logger.finalize(status)
    for line in run_summary(fabric, state, throughput, time.perf_counter() - started, first_step, args):
        fabric.print(line)


def run_summary(
    fabric: L.Fabric, state: dict, throughput: Throughput, seconds: float, first_step: int, args: TrainArgs
) -> list[str]:
    """What a user wants to know when the run ends: how long and how fast, and where everything went."""
    speed = throughput.overall()
    rate = (
        f"{speed['throughput/tokens_per_sec']:,.0f} tokens/s, MFU {speed['throughput/mfu']:.1%} (training steps "
        f"only, evaluation and saving excluded)"
        if speed
        else "no step trained"
    )
    latest = find_latest(args.out_dir)
    lines = [
        f"Run summary: steps {first_step} -> {state['step_count']} of {args.max_step} in {seconds:,.0f} s; {rate}; "
        f"peak memory {human_size(peak_memory(fabric.device))} on rank 0",
        f"  checkpoints: {args.out_dir} (newest {latest.name if latest else 'none'})",
        f"  metrics: {args.out_dir / 'metrics.csv'}",
    ]
    dashboards = [where for logger in fabric.loggers if (where := dashboard_location(logger))]
    lines += [f"  dashboard: {where} (figures under figures/)" for where in dashboards] or [
        "  dashboard: none (--logger wandb or tensorboard adds one, with the attention and sink figures)"
    ]
    return lines


# ------------------------------------------------------------------------------------------ fit
def fit(
    fabric: L.Fabric,
    state: dict,
    train_loader,
    valid_loaders: dict,
    probe: Optional[torch.Tensor],
    args: TrainArgs,
    accumulation: int,
) -> Throughput:
    """Train from `state` to `args.max_step` (or a stop signal); returns the timing of its steps."""
    model = state["model"]
    config: Config = model.config
    tokens_per_step = args.global_batch_size * config.block_size
    flops_per_step = estimated_flops_per_step(config, args.micro_batch_size, config.block_size) * accumulation
    precision = args.precision or default_precision()
    compute_dtype = {"16": torch.float16, "bf16": torch.bfloat16}.get(precision.split("-")[0], torch.float32)
    peak = peak_flops(fabric.device, compute_dtype, args.peak_flops)
    throughput = Throughput(tokens_per_step, flops_per_step * fabric.world_size, peak * fabric.world_size)
    batches = iter(train_loader)
    bar = tqdm(
        total=args.max_step,
        initial=state["step_count"],
        desc="train",
        unit="step",
        dynamic_ncols=True,
        disable=not (args.progress_bar and fabric.global_rank == 0),
    )
    say = bar.write if not bar.disable else fabric.print

    if state["step_count"] == 0:
        evaluate(fabric, model, valid_loaders, probe, args, state, say)
    with StopRequest().installed() as stop:
        while state["step_count"] < args.max_step:
            if fabric.strategy.reduce_boolean_decision(stop.signal is not None, all=False):
                say(f"Stop requested by signal; saving step {state['step_count']} and exiting")
                save(fabric, state, args, say)
                break
            started = time.perf_counter()
            loss, grad_norm, lr = train_step(fabric, state, batches, args, accumulation)
            throughput.add(time.perf_counter() - started)
            step = state["step_count"]
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}")
            if step % args.log_step_interval == 0 or step == args.max_step:
                speed = throughput.report()
                fabric.log_dict(
                    {
                        "metric/train_loss": loss,
                        "lr": lr,
                        "gradient_norm": grad_norm,
                        "total_tokens": state["tokens_seen"],
                        **speed,
                    },
                    step=step,
                )
                bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", tok_s=f"{speed['throughput/tokens_per_sec']:.0f}")
                if bar.disable:
                    say(
                        f"step {step}/{args.max_step} | loss {loss:.4f} | lr {lr:.3e} | "
                        f"{speed['throughput/tokens_per_sec']:.0f} tok/s | mfu {speed['throughput/mfu']:.1%}"
                    )
            if step % args.eval_step_interval == 0 or step == args.max_step:
                evaluate(fabric, model, valid_loaders, probe, args, state, say)
            if step % args.save_step_interval == 0 or step == args.max_step:
                save(fabric, state, args, say)
    bar.close()
    return throughput


def train_step(
    fabric: L.Fabric, state: dict, batches: Iterator[torch.Tensor], args: TrainArgs, accumulation: int
) -> tuple[float, float, float]:
    """One optimizer step over `accumulation` micro-batches -> (loss averaged over ranks, grad norm, lr)."""
    model, optimizer = state["model"], state["optimizer"]
    step = state["step_count"]
    lr = learning_rate_at(
        step, args.learning_rate, args.min_lr, args.warmup_steps, args.max_step, args.decay_lr, args.cooldown_steps
    )
    set_learning_rate(optimizer, lr)
    total = torch.zeros((), device=fabric.device)
    n_ignored = ignored_predictions(model.config, args.ignore_loss)
    for micro in range(accumulation):
        inputs, targets = split_batch(fabric.to_device(next(batches)), n_ignored)
        with fabric.no_backward_sync(model, enabled=micro < accumulation - 1):
            loss = lm_loss(model(inputs), targets)
            fabric.backward(loss / accumulation)
        total += loss.detach()
        state["iter_num"] += 1
    mean_loss = float(cast(torch.Tensor, fabric.all_reduce(total / accumulation, reduce_op="mean")))
    if args.grad_clip > 0:
        norm = fabric.clip_gradients(model, optimizer, max_norm=args.grad_clip, error_if_nonfinite=False)
    else:
        norm = torch.nn.utils.get_total_norm([p.grad for p in model.parameters() if p.grad is not None])
    assert norm is not None  # clip_gradients with max_norm returns the norm
    grad_norm = float(full_tensor(norm))
    if not (math.isfinite(mean_loss) and math.isfinite(grad_norm)):
        latest = find_latest(args.out_dir)
        raise TrainingError(
            f"non-finite training loss ({mean_loss}) or gradient norm ({grad_norm}) at step {step + 1}; "
            f"stopped before the update. Last good checkpoint: {latest or 'none'}. Lower "
            f"--learning_rate or check the data and model settings"
        )
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    state["step_count"] += 1
    state["tokens_seen"] += args.global_batch_size * model.config.block_size
    return mean_loss, grad_norm, lr


def save(fabric: L.Fabric, state: dict, args: TrainArgs, say) -> Path:
    path = checkpoint_path(args.out_dir, state["step_count"])
    save_atomic(
        fabric, path, state, needed=checkpoint_bytes(args.out_dir, num_parameters(state["model"].config)["total"])
    )
    if fabric.global_rank == 0:
        prune(args.out_dir, args.keep_last)
    say(f"Saved checkpoint {path}")
    return path


# ------------------------------------------------------------------------------------------ validate
def evaluate(
    fabric: L.Fabric, model, valid_loaders: dict, probe: Optional[torch.Tensor], args: TrainArgs, state: dict, say
) -> dict[str, float]:
    """Validation loss/ppl per domain and the sink metric (with one series per layer), logged at the current
    step; the dashboards also get its figures (`log_sink_images`) and the numbers as the run's summary."""
    step = state["step_count"]
    n_ignored = ignored_predictions(model.config, args.ignore_loss)
    metrics = validate(fabric, model, valid_loaders, args.eval_iters, n_ignored)
    result = None
    if probe is not None:
        result = sink_evaluation(fabric, model, probe, args.sink_eps, args.sink_k, args.micro_batch_size, n_ignored)
        metrics.update(sink_metrics(result))
    metrics["total_tokens"] = state["tokens_seen"]
    fabric.log_dict(metrics, step=step)
    if result is not None and probe is not None:
        log_sink_images(fabric, model, probe, result, args.out_dir / "metrics.csv", step)
    for logger in fabric.loggers:
        log_summary(logger, {**metrics, "eval_step": step})
    summary = " | ".join(
        f"{k.removeprefix('metric/')} {v:.4g}"
        for k, v in metrics.items()
        if k.endswith("val_loss") or k in ("metric/sink_1", "metric/sink_star")
    )
    say(f"eval step {state['step_count']}: {summary}")
    return metrics


@torch.no_grad()
def validate(fabric: L.Fabric, model, valid_loaders: dict, eval_iters: int, n_ignored: int = 0) -> dict[str, float]:
    """Mean loss over up to `eval_iters` batches of each domain, averaged over ranks, and its perplexity."""
    model.eval()
    metrics = {}
    for domain, loader in valid_loaders.items():
        losses = []
        for index, batch in enumerate(loader):
            if index >= eval_iters:
                break
            inputs, targets = split_batch(fabric.to_device(batch), n_ignored)
            losses.append(lm_loss(model(inputs), targets))
        if not losses:
            raise DataError(
                f"validation domain {domain} yielded no batch on rank {fabric.global_rank}; "
                "add validation data or lower micro_batch_size"
            )
        loss = float(cast(torch.Tensor, fabric.all_reduce(torch.stack(losses).mean(), reduce_op="mean")))
        metrics[f"metric/{domain}_val_loss"] = loss
        metrics[f"metric/{domain}_val_ppl"] = math.exp(min(loss, 80.0))
    model.train()
    return metrics


@torch.no_grad()
def sink_evaluation(
    fabric: L.Fabric, model, probe: torch.Tensor, eps: float, k: int, batch_size: int, n_ignored: int = 0
) -> ProbeResult:
    """The report of the same probe evaluator as the evaluation scripts (`lit_gpt.measurement.analysis.evaluate_gpt`):
    sink rates overall and per layer, probe loss, norms.

    Every rank computes the same numbers (the probe set is small); under FSDP every rank must run the
    forward anyway.
    """
    result = evaluate_gpt(
        model, fabric.to_device(probe), eps, k, batch_size, prediction_mask(n_ignored, probe.shape[1])
    )
    model.train()
    return result


def sink_metrics(result: ProbeResult) -> dict[str, float]:
    """Sink_1..Sink_k (and Sink*, sink-token rate) in percent and the probe loss of a `sink_evaluation`, and
    Sink_1 (Sink*, sink-token rate) of each layer as a series of its own (`layer_metric`)."""
    metrics = {f"metric/{name}": value for name, value in result.sink_rates.items()}
    metrics["metric/probe_loss"] = result.loss
    for name in LAYER_SERIES:
        for layer, value in enumerate(result.layer_sink_rates.get(name, [])):
            metrics[layer_metric(name, layer)] = value
    return metrics


@torch.no_grad()
def log_sink_images(
    fabric: L.Fabric, model, probe: torch.Tensor, result: ProbeResult, metrics_csv: Path, step: int
) -> None:
    """On the dashboards that take images: the attention maps of the first probe window (head 0 of every
    layer), the norms per position of a `sink_evaluation`, and each per-layer sink rate over the run's
    evaluations so far (layers x steps, from metrics.csv, so a resumed run draws its whole history).

    Every rank runs the forward (FSDP needs them all); rank 0 draws.
    """
    if not any(takes_images(logger) for logger in fabric.loggers):
        return
    # The module under Fabric's wrapper and torch.compile: one eager forward of one window, where the compiled
    # model would compile a graph for this shape first.
    eager = getattr(model, "module", model)
    eager.eval()
    maps = [attn.float().cpu() for attn in eager(fabric.to_device(probe[:1]), return_attention=True)[1]]
    eager.train()
    if fabric.global_rank != 0:
        return
    config = model.config
    rows = read_metrics(metrics_csv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        images = {
            "figures/attention": attention_heatmaps(
                maps, folder / "attention.png", n_slots=config.n_slots, n_sink_tokens=config.sink_tokens
            ),
            "figures/norms": norms_by_position(result, folder / "norms.png"),
        }
        for name in LAYER_SERIES:
            steps, rates = layer_history(rows, name)
            if steps:
                images[f"figures/{name}_by_layer"] = layer_history_heatmap(
                    steps, rates, folder / f"{name}.png", metric_label(name)
                )
        for logger in fabric.loggers:
            log_images(logger, images, step)
