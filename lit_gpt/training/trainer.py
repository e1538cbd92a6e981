"""Pretraining: setup -> fit -> validate, on Lightning Fabric.

`setup(plan)` takes a checked `RunPlan` (`lit_gpt.training.run_plan`; `TrainArgs` are checked into one),
builds Fabric (accelerator auto; strategy auto | ddp | fsdp, the last FSDP2 as `lit_gpt.training.fsdp`
sets it up, on GPUs and CPUs alike; precision bf16-mixed on capable GPUs, 32-true otherwise) and runs
`main` on every process. `main` builds data, model and optimizer, restores the
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
from lit_gpt.measurement.loss import lm_loss, prediction_mask, split_batch
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
from lit_gpt.training.run_plan import RunPlan, resolve
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


def make_strategy(plan: RunPlan):
    if plan.run.strategy == "fsdp":
        return FSDP2Strategy()
    return plan.run.strategy


def make_fabric(plan: RunPlan) -> L.Fabric:
    loggers: list[Logger] = [CSVMetrics(plan.out_dir)]
    dashboard = dashboard_logger(
        plan.log.logger,
        plan.out_dir / "logs",
        plan.run.out_name,
        dashboard_tags(plan.model),
        resume=not starts_fresh(plan),
    )
    if dashboard is not None:
        loggers.append(dashboard)
    # FSDP2Strategy writes its gathered checkpoint itself; the other strategies take the direct writer.
    plugins: list[Any] = [] if plan.run.strategy == "fsdp" else [DirectCheckpointIO()]
    precision: Any = plan.run.precision or default_precision()  # a precision name TrainArgs checked
    return L.Fabric(
        accelerator="auto",
        devices=plan.run.devices,
        num_nodes=plan.run.num_nodes,
        strategy=make_strategy(plan),
        precision=precision,
        loggers=loggers,
        plugins=plugins,
    )


def plan_of(args: TrainArgs | RunPlan) -> RunPlan:
    """A checked run: a `RunPlan` as it is, `TrainArgs` checked and built into one."""
    return args if isinstance(args, RunPlan) else resolve(args)


def setup(args: TrainArgs | RunPlan) -> None:
    """Run the training described by `args` on every process Fabric manages (or was launched with)."""
    plan = plan_of(args)
    finished = finished_checkpoint(plan)
    if finished is not None:
        print(
            f"{plan.out_dir} has finished already: its checkpoint {finished.name} has reached --max_step "
            f"{plan.optim.max_step}, so there is nothing to do (raise --max_step to train on, or choose another "
            f"--out_name)"
        )
        return
    check_data_dirs(plan)
    with owning_run_folder(plan):
        fabric = make_fabric(plan)
        check_world_size(fabric, plan)
        if _is_using_cli():  # `fabric run` started every process and Fabric joined them up; launching is refused
            main(fabric, plan)
        else:
            fabric.launch(partial(main, plan=plan))


def becomes_rank_zero() -> bool:
    """Whether this process is, or will launch, global rank 0: the launchers (torchrun, `fabric run`, SLURM,
    Fabric's own for the processes it starts) give every other process a non-zero rank in the environment."""
    return all(
        os.environ.get(name, "0") == "0" for name in ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID")
    )


@contextmanager
def owning_run_folder(plan: RunPlan) -> Iterator[None]:
    """On the process that becomes rank 0: hold the run folder's lock for the whole run, remove what a killed
    save left there and, for a fresh start, set an earlier run's logs aside. Other processes only check."""
    if not becomes_rank_zero():
        check_out_dir(plan)
        yield
        return
    check_not_a_file(plan)
    created = not plan.out_dir.exists()
    output_folder(plan.out_dir)
    try:
        with exclusive(
            plan.out_dir / LOCK_FILE,
            f"run folder {plan.out_dir}",
            "wait for that run to end, or choose another --out_name (nothing was changed)",
        ):
            check_out_dir(plan)
            remove_temporaries(plan.out_dir)
            if starts_fresh(plan):
                for earlier, kept in set_aside_earlier_logs(plan.out_dir):
                    print(
                        f"{earlier} is an earlier run's (no checkpoint to continue); kept as {kept}, this run "
                        f"starts a new one"
                    )
            yield
    except BaseException:
        if created:
            remove_if_empty(plan.out_dir)
        raise


def remove_if_empty(folder: Path) -> None:
    """Take back a run folder this run created when it stopped before writing anything there (a setting
    refused once Fabric was built), so a refused run leaves no trace."""
    try:
        folder.rmdir()
    except OSError:  # it holds something (logs, checkpoints): that stays
        pass


def finished_checkpoint(plan: RunPlan) -> Optional[Path]:
    """The checkpoint of a run that continues its folder (`--resume auto` or `True`) and has reached
    `--max_step` there already; None when there is training left to do (or no readable checkpoint)."""
    latest = find_latest(plan.out_dir) if plan.run.resume in (True, "auto") else None
    if latest is None:
        return None
    try:
        done = read_checkpoint(latest, mmap=True).get("step_count", 0) >= plan.optim.max_step
    except UserError:  # unreadable: the resume reports it and falls back to an older one
        return None
    return latest if done else None


def starts_fresh(plan: RunPlan) -> bool:
    """Whether the run starts from step 0 rather than continuing a checkpoint of its folder."""
    resume = plan.run.resume
    return resume is False or (resume == "auto" and not list_checkpoints(plan.out_dir))


def check_world_size(fabric: L.Fabric, plan: RunPlan) -> None:
    """FSDP shards over processes: one process has nothing to shard over, and running it anyway would hide
    a mistaken --devices / --num_nodes."""
    strategy: Any = fabric.strategy  # a parallel strategy here, which has process and node counts
    if plan.run.strategy == "fsdp" and strategy.num_processes * strategy.num_nodes == 1:
        raise ArgsError(
            "strategy=fsdp shards the model over processes but this run has one (devices="
            f"{plan.run.devices!r}, num_nodes={plan.run.num_nodes}); pass --devices 2 or more, or --strategy auto"
        )


def check_not_a_file(plan: RunPlan) -> None:
    if plan.out_dir.exists() and not plan.out_dir.is_dir():
        raise OutputError(f"{plan.out_dir} is a file, not a run folder; choose another --out_name or --checkpoint_root")


def check_out_dir(plan: RunPlan) -> None:
    """Refuse, before any process starts, to write where a run cannot or must not: a file in place of the
    run folder, a fresh start over an earlier run's checkpoints (it would overwrite and prune them), or
    a damaged checkpoint named by --resume."""
    check_not_a_file(plan)
    existing = list_checkpoints(plan.out_dir)
    resume = plan.run.resume
    if resume is False and existing:
        raise ArgsError(
            f"{plan.out_dir} already holds checkpoints up to {existing[-1].name}; pass --resume auto to "
            f"continue that run, or choose another --out_name (nothing was changed)"
        )
    if isinstance(resume, str) and resume != "auto":
        read_checkpoint(resume, mmap=True)


def gradient_accumulation(global_batch_size: int, micro_batch_size: int, world_size: int) -> int:
    per_step = micro_batch_size * world_size
    if global_batch_size % per_step:
        raise ArgsError(
            f"global_batch_size={global_batch_size} is not a multiple of micro_batch_size * devices = "
            f"{micro_batch_size} * {world_size}; change one of them"
        )
    return global_batch_size // per_step


# ------------------------------------------------------------------------------------------ data
def check_data_dirs(args: TrainArgs | RunPlan) -> None:
    """Fail before any process starts when a data folder or the probe file is missing, or when the shards
    hold token ids the model's vocabulary does not cover."""
    plan = plan_of(args)
    vocab_size = plan.model.vocab_size
    folders = {"train_data_dir": plan.data.train_dir}
    if plan.data.val_dir != plan.data.train_dir:
        folders["val_data_dir"] = plan.data.val_dir
    for flag, folder in folders.items():
        if not folder.is_dir():
            raise DataError(
                f"{flag} {folder} does not exist; run `bash preprocess/run_preprocess.sh --source embedded` "
                f"or pass --{flag} pointing at tokenized shards"
            )
        mismatch = vocab_mismatch(folder, vocab_size)
        if mismatch:
            raise DataError(
                f"{mismatch}; set --model.vocab_size {recorded_vocab_size(folder)} or use shards built "
                f"with the model's tokenizer"
            )
    probe = plan.probe
    if probe.enabled and (probe.file is None or not Path(probe.file).is_file()):
        raise DataError(
            f"probe file {probe.file} does not exist; build it with preprocess/run_preprocess.sh, "
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


def train_mixture(plan: RunPlan) -> dict[str, float]:
    """The YAML's train weights, or every train dataset weighted by its size (plain concatenation)."""
    data = plan.data
    if data.train_mixture:
        return dict(data.train_mixture)
    return {name: float(open_stream(data.train_dir, name).n_tokens) for name in dataset_names(data.train_dir, "train")}


def build_data(fabric: L.Fabric, plan: RunPlan):
    """(train loader, {domain: valid loader}, probe windows or None), sharded by rank."""
    data, config, batch = plan.data, plan.model, plan.optim.micro_batch_size
    shard = {
        "rank": fabric.global_rank,
        "world_size": fabric.world_size,
        "seed": plan.run.seed,
        "vocab_size": config.vocab_size,
        "transforms": data.transforms,
    }
    train = build_train_loader(
        data.train_dir, train_mixture(plan), config.block_size, batch, downsample_ratio=data.downsample_ratio, **shard
    )
    valid_names = list(data.valid_domains) or dataset_names(data.val_dir, "valid")
    valid = build_valid_loaders(data.val_dir, valid_names, config.block_size, batch, **shard)
    probe = None
    if plan.probe.enabled:
        # The same transforms (fixed and random tokens) as the evaluation script, so both report alike.
        raw = load_probe_windows(plan.probe.file, plan.probe.tokenizer, vocab_size=config.vocab_size)
        probe = data.transforms.apply(raw, config.vocab_size)
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
def build_model(fabric: L.Fabric, plan: RunPlan) -> torch.nn.Module:
    """The model set up for the strategy, with the run's attention backend. Every strategy builds the same
    full model from the seed (under FSDP on the CPU, then shards it; see `lit_gpt.training.fsdp`), so runs start
    from the same weights whatever the strategy."""
    with fabric.init_module():
        model = GPT(plan.model, plan.attention)
    if plan.run.activation_checkpointing:
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
    return fabric.setup(cast(torch.nn.Module, torch.compile(model)) if plan.run.compile else model)


def main(fabric: L.Fabric, plan: RunPlan) -> None:
    config, optim = plan.model, plan.optim
    accumulation = gradient_accumulation(optim.global_batch_size, optim.micro_batch_size, fabric.world_size)
    if fabric.global_rank == 0:
        output_folder(plan.out_dir)
    fabric.seed_everything(plan.run.seed, verbose=False)
    train_loader, valid_loaders, probe = build_data(fabric, plan)
    model = build_model(fabric, plan)
    optimizer = fabric.setup_optimizers(
        make_optimizer(model, optim.learning_rate, optim.weight_decay, optim.betas, optim.decay_norms_and_biases)
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
        "train": dict(plan.arguments),
    }
    path = resume_path(plan.run.resume, plan.out_dir, fabric.print)
    if path is not None:
        check_resumable(path, state, config)
        fabric.print(f"Resuming from {path}")
        fabric.load(path, state, weights_only=False)
        state["config"], state["train"] = config.asdict(), dict(plan.arguments)
        resume_logging(fabric.loggers, state["step_count"])
    for logger in fabric.loggers:
        logger.log_hyperparams({**plan.arguments, "model_config": config.asdict()})
    counts = num_parameters(config)
    fabric.print(
        f"{config.name} ({config.variant_summary()}), {counts['total']:,} parameters "
        f"({counts['non_embedding']:,} non-embedding), "
        f"{fabric.world_size} process(es), gradient accumulation {accumulation}"
    )
    status = "failed"
    started, first_step = time.perf_counter(), state["step_count"]
    try:
        throughput = fit(fabric, state, train_loader, valid_loaders, probe, plan, accumulation)
        status = "success"
    finally:
        for logger in fabric.loggers:
            logger.finalize(status)
    for line in run_summary(fabric, state, throughput, time.perf_counter() - started, first_step, plan):
        fabric.print(line)


def run_summary(
    fabric: L.Fabric, state: dict, throughput: Throughput, seconds: float, first_step: int, plan: RunPlan
) -> list[str]:
    """What a user wants to know when the run ends: how long and how fast, and where everything went."""
    speed = throughput.overall()
    rate = (
        f"{speed['throughput/tokens_per_sec']:,.0f} tokens/s, MFU {speed['throughput/mfu']:.1%} (training steps "
        f"only, evaluation and saving excluded)"
        if speed
        else "no step trained"
    )
    latest = find_latest(plan.out_dir)
    lines = [
        f"Run summary: steps {first_step} -> {state['step_count']} of {plan.optim.max_step} in {seconds:,.0f} s; "
        f"{rate}; peak memory {human_size(peak_memory(fabric.device))} on rank 0",
        f"  checkpoints: {plan.out_dir} (newest {latest.name if latest else 'none'})",
        f"  metrics: {plan.out_dir / 'metrics.csv'}",
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
    plan: RunPlan,
    accumulation: int,
) -> Throughput:
    """Train from `state` to `--max_step` (or a stop signal); returns the timing of its steps."""
    model = state["model"]
    config: Config = model.config
    optim, run, max_step = plan.optim, plan.run, plan.optim.max_step
    tokens_per_step = optim.global_batch_size * config.block_size
    flops_per_step = estimated_flops_per_step(config, optim.micro_batch_size, config.block_size) * accumulation
    precision = run.precision or default_precision()
    compute_dtype = {"16": torch.float16, "bf16": torch.bfloat16}.get(precision.split("-")[0], torch.float32)
    peak = peak_flops(fabric.device, compute_dtype, run.peak_flops)
    throughput = Throughput(tokens_per_step, flops_per_step * fabric.world_size, peak * fabric.world_size)
    batches = iter(train_loader)
    bar = tqdm(
        total=max_step,
        initial=state["step_count"],
        desc="train",
        unit="step",
        dynamic_ncols=True,
        disable=not (plan.log.progress_bar and fabric.global_rank == 0),
    )
    say = bar.write if not bar.disable else fabric.print

    if state["step_count"] == 0:
        evaluate(fabric, model, valid_loaders, probe, plan, state, say)
    with StopRequest().installed() as stop:
        while state["step_count"] < max_step:
            if fabric.strategy.reduce_boolean_decision(stop.signal is not None, all=False):
                say(f"Stop requested by signal; saving step {state['step_count']} and exiting")
                save(fabric, state, plan, say)
                break
            started = time.perf_counter()
            loss, grad_norm, lr = train_step(fabric, state, batches, plan, accumulation)
            throughput.add(time.perf_counter() - started)
            step = state["step_count"]
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}")
            if step % plan.log.step_interval == 0 or step == max_step:
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
                        f"step {step}/{max_step} | loss {loss:.4f} | lr {lr:.3e} | "
                        f"{speed['throughput/tokens_per_sec']:.0f} tok/s | mfu {speed['throughput/mfu']:.1%}"
                    )
            if step % run.eval_step_interval == 0 or step == max_step:
                evaluate(fabric, model, valid_loaders, probe, plan, state, say)
            if step % run.save_step_interval == 0 or step == max_step:
                save(fabric, state, plan, say)
    bar.close()
    return throughput


def train_step(
    fabric: L.Fabric, state: dict, batches: Iterator[torch.Tensor], plan: RunPlan, accumulation: int
) -> tuple[float, float, float]:
    """One optimizer step over `accumulation` micro-batches -> (loss averaged over ranks, grad norm, lr)."""
    model, optimizer, optim = state["model"], state["optimizer"], plan.optim
    step = state["step_count"]
    lr = learning_rate_at(
        step,
        optim.learning_rate,
        optim.min_lr,
        optim.warmup_steps,
        optim.max_step,
        optim.decay_lr,
        optim.cooldown_steps,
    )
    set_learning_rate(optimizer, lr)
    total = torch.zeros((), device=fabric.device)
    for micro in range(accumulation):
        inputs, targets = split_batch(fabric.to_device(next(batches)), plan.data.ignored_predictions)
        with fabric.no_backward_sync(model, enabled=micro < accumulation - 1):
            loss = lm_loss(model(inputs), targets)
            fabric.backward(loss / accumulation)
        total += loss.detach()
        state["iter_num"] += 1
    mean_loss = float(cast(torch.Tensor, fabric.all_reduce(total / accumulation, reduce_op="mean")))
    if optim.grad_clip > 0:
        norm = fabric.clip_gradients(model, optimizer, max_norm=optim.grad_clip, error_if_nonfinite=False)
    else:
        norm = torch.nn.utils.get_total_norm([p.grad for p in model.parameters() if p.grad is not None])
    assert norm is not None  # clip_gradients with max_norm returns the norm
    grad_norm = float(full_tensor(norm))
    if not (math.isfinite(mean_loss) and math.isfinite(grad_norm)):
        latest = find_latest(plan.out_dir)
        raise TrainingError(
            f"non-finite training loss ({mean_loss}) or gradient norm ({grad_norm}) at step {step + 1}; "
            f"stopped before the update. Last good checkpoint: {latest or 'none'}. Lower "
            f"--learning_rate or check the data and model settings"
        )
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    state["step_count"] += 1
    state["tokens_seen"] += optim.global_batch_size * model.config.block_size
    return mean_loss, grad_norm, lr


def save(fabric: L.Fabric, state: dict, plan: RunPlan, say) -> Path:
    path = checkpoint_path(plan.out_dir, state["step_count"])
    save_atomic(
        fabric, path, state, needed=checkpoint_bytes(plan.out_dir, num_parameters(state["model"].config)["total"])
    )
    if fabric.global_rank == 0:
        prune(plan.out_dir, plan.run.keep_last)
    say(f"Saved checkpoint {path}")
    return path


# ------------------------------------------------------------------------------------------ validate
def evaluate(
    fabric: L.Fabric, model, valid_loaders: dict, probe: Optional[torch.Tensor], plan: RunPlan, state: dict, say
) -> dict[str, float]:
    """Validation loss/ppl per domain and the sink metric (with one series per layer), logged at the current
    step; the dashboards also get its figures (`log_sink_images`) and the numbers as the run's summary."""
    step = state["step_count"]
    n_ignored = plan.data.ignored_predictions
    metrics = validate(fabric, model, valid_loaders, plan.run.eval_iters, n_ignored)
    result = None
    if probe is not None:
        eps, k, batch = plan.probe.eps, plan.probe.k, plan.optim.micro_batch_size
        result = sink_evaluation(fabric, model, probe, eps, k, batch, n_ignored)
        metrics.update(sink_metrics(result))
    metrics["total_tokens"] = state["tokens_seen"]
    fabric.log_dict(metrics, step=step)
    if result is not None and probe is not None:
        log_sink_images(fabric, model, probe, result, plan.out_dir / "metrics.csv", step)
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
