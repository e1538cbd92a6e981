"""Training throughput (tokens/s) and MFU of the trainer's optimizer step at the `tiny` preset.

The CPU benchmark shape of docs/reference.md: LLaMA, 6 layers, n_embd 128, 4 heads, SwiGLU 340, vocab
512, block 256, micro batch 32, fp32, AdamW (0.9, 0.95), lr 3e-3 -- one micro-batch per optimizer step.
Each row times `lit_gpt.training.trainer.train_step` (forward, backward, clipping, AdamW) on random token
batches, median over `--steps` steps after `--warmup` steps. MFU is the model FLOPs of
`lit_gpt.model.flops` (about 80 GFLOP per step for softmax) over the fp32 matmul peak measured here first.

    python bench/train.py                       # eager
    python bench/train.py --compile             # adds a torch.compile column
    python bench/train.py --vs-litgpt           # litgpt's GPT against ours, eager and compiled
    python bench/train.py --profile --compile   # where a compiled step's time goes, by kind of work

`--vs-litgpt` needs `pip install litgpt` (optional; the mode says so and stops when it is absent). Both
models get the same shape, batches, loss, clipping and plain AdamW; the contenders take turns, `--rounds`
times `--steps` steps each, in this one process, so a slow spell of a shared machine hits them all alike.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import lightning as L
import torch
import torch.nn.functional as F

from lit_gpt.model.config import Config
from lit_gpt.model.flops import estimated_flops_per_step
from lit_gpt.model.gpt import GPT
from lit_gpt.model.variants import ATTENTION_VARIANTS
from lit_gpt.training.loggers import measure_matmul_flops
from lit_gpt.training.optim import make_optimizer
from lit_gpt.training.run_plan import resolve
from lit_gpt.training.train_args import TrainArgs
from lit_gpt.training.trainer import RNGState, build_model, train_step

VARIANTS = {
    "softmax": {},
    "sigmoid, no norm": {"attn_score": "sigmoid", "attn_normalize": "none"},
    "KV-bias (k*, v*)": {"k_bias": True, "v_bias": True},
    "window 64": {"window_size": 64},
}
# Our variants raced against litgpt: softmax (the like-for-like row) and the non-softmax weight functions.
RACED = ("softmax", "sigmoid", "elu", "kernel_elu_sum", "kernel_mlp")
BATCH, LENGTH = 32, 256


def random_batches(vocab_size: int, batch: int, length: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    while True:
        yield torch.randint(0, vocab_size, (batch, length + 1), generator=generator)


def trainer_step(overrides: dict, compile_model: bool, max_step: int) -> tuple[Callable[[], None], Config]:
    """One optimizer step of the trainer at the benchmark shape, as a call, and the model's config."""
    plan = resolve(
        TrainArgs(
            model_name="tiny",
            model=overrides,
            global_batch_size=BATCH,
            micro_batch_size=BATCH,
            learning_rate=3e-3,
            min_lr=3e-3,
            warmup_steps=0,
            max_step=max_step,
            compile=compile_model,
            logger="none",
            progress_bar=False,
            eval_sink=False,
        )
    )
    fabric = L.Fabric(accelerator="cpu", devices=1, precision="32-true")
    torch.manual_seed(0)
    config = plan.model
    model = build_model(fabric, plan)
    optimizer = fabric.setup_optimizers(
        make_optimizer(model, plan.optim.learning_rate, plan.optim.weight_decay, plan.optim.betas)
    )
    state = {
        "model": model,
        "optimizer": optimizer,
        "rng": RNGState(),
        "iter_num": 0,
        "step_count": 0,
        "tokens_seen": 0,
    }
    batches = random_batches(config.vocab_size, plan.optim.micro_batch_size, config.block_size)
    return lambda: train_step(fabric, state, batches, plan, accumulation=1), config


def time_variant(overrides: dict, compile_model: bool, steps: int, warmup: int) -> tuple[float, float]:
    """(median seconds per optimizer step, model FLOPs per step)."""
    step, config = trainer_step(overrides, compile_model, steps + warmup)
    times = []
    for index in range(warmup + steps):
        started = time.perf_counter()
        step()
        if index >= warmup:
            times.append(time.perf_counter() - started)
    return statistics.median(times), estimated_flops_per_step(config, BATCH, config.block_size)


def trainer_table(options: argparse.Namespace, peak: float) -> None:
    modes = [False, True] if options.compile else [False]
    header = "| variant | GFLOP/step |" + "".join(
        f" {'compiled' if c else 'eager'} s/step | tokens/s | MFU |" for c in modes
    )
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for name in options.variants:
        cells = []
        for compile_model in modes:
            seconds, flops = time_variant(VARIANTS[name], compile_model, options.steps, options.warmup)
            cells.append(f" {seconds:.3f} | {BATCH * LENGTH / seconds:,.0f} | {flops / seconds / peak:.1%} |")
        print(f"| {name} | {flops / 1e9:.1f} |" + "".join(cells), flush=True)


# --- where the step's time goes -------------------------------------------------------------------------

# Self time of profiled ops, by the kind of work: what any model of this shape spends on matrix
# products and fused attention kernels, against what a framework can still change around them.
OP_KINDS = (
    ("matrix products (BLAS)", lambda name: name in ("aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm")),
    ("fused attention kernels (SDPA)", lambda name: "scaled_dot_product" in name),
    ("compiled elementwise code (inductor)", lambda name: name.startswith("## Call CompiledFxGraph")),
)
OTHER_OPS = "everything else (eager elementwise ops, loss, AdamW, dispatch)"


def op_kind(name: str) -> str:
    return next((kind for kind, matches in OP_KINDS if matches(name)), OTHER_OPS)


def profile_table(options: argparse.Namespace) -> None:
    """Per variant: milliseconds per step and share of each kind of work, over `--steps` profiled steps."""
    from torch.profiler import ProfilerActivity, profile

    mode = "compiled" if options.compile else "eager"
    print(f"| variant ({mode}) | " + " | ".join(kind for kind, _ in OP_KINDS) + f" | {OTHER_OPS} | total ms/step |")
    print("|---" * (len(OP_KINDS) + 3) + "|")
    for name in options.variants:
        step, _ = trainer_step(VARIANTS[name], options.compile, options.steps + options.warmup)
        for _ in range(options.warmup):
            step()
        with profile(activities=[ProfilerActivity.CPU]) as profiler:
            for _ in range(options.steps):
                step()
        spent = dict.fromkeys([kind for kind, _ in OP_KINDS] + [OTHER_OPS], 0.0)
        for event in profiler.key_averages():
            spent[op_kind(event.key)] += event.self_cpu_time_total / 1e3 / options.steps
        total = sum(spent.values())
        cells = " | ".join(f"{ms:.0f} ms ({ms / total:.0%})" for ms in spent.values())
        print(f"| {name} | {cells} | {total:.0f} |", flush=True)


# --- litgpt against ours ---------------------------------------------------------------------------------


def litgpt_model() -> torch.nn.Module | None:
    """litgpt's own GPT at the reference shape, or None when litgpt is not installed."""
    try:
        from litgpt.config import Config as LitConfig
        from litgpt.model import GPT as LitGPT
    except ImportError:
        return None
    ours = Config.from_name("tiny", block_size=LENGTH)
    config = LitConfig(
        name="reference",
        block_size=LENGTH,
        vocab_size=ours.vocab_size,
        padded_vocab_size=ours.vocab_size,
        n_layer=ours.n_layer,
        n_embd=ours.n_embd,
        n_head=ours.n_head,
        n_query_groups=ours.n_head,
        rotary_percentage=1.0,
        parallel_residual=False,
        bias=False,
        norm_class_name="RMSNorm",
        norm_eps=1e-5,
        mlp_class_name="LLaMAMLP",
        intermediate_size=ours.intermediate_size,
    )
    return LitGPT(config)


@dataclass
class Contender:
    """One model and its optimizer, stepped by the same plain training step as every other contender."""

    name: str
    mode: str
    step: Callable[[], None]
    times: list[float]


def contender(name: str, model: torch.nn.Module, compiled: bool, warmup: int) -> Contender:
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95), weight_decay=0.1)
    forward = torch.compile(model) if compiled else model
    batches = random_batches(512, BATCH, LENGTH)

    def step() -> None:
        batch = next(batches)
        logits = forward(batch[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    return Contender(name, "compiled" if compiled else "eager", step, [])


def race(contenders: list[Contender], rounds: int, steps: int) -> None:
    """Each round times `steps` steps of every contender in turn."""
    for _ in range(rounds):
        for entry in contenders:
            for _ in range(steps):
                started = time.perf_counter()
                entry.step()
                entry.times.append(time.perf_counter() - started)


def versus_litgpt(options: argparse.Namespace) -> None:
    if litgpt_model() is None:
        print("litgpt is not installed; `pip install litgpt` adds it (optional). Skipping --vs-litgpt.")
        return
    modes = [False, True] if options.modes == "both" else [options.modes == "compiled"]
    # Every contender compiles the same forward code with its own guards; past dynamo's default of 8
    # recompilations it would silently run the later contenders eager.
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 2 * (len(RACED) + 1))
    contenders = []
    for compiled in modes:
        contenders.append(contender("litgpt", litgpt_model(), compiled, options.warmup))
        for variant in RACED:
            model = GPT(Config.from_name("tiny", block_size=LENGTH, **ATTENTION_VARIANTS[variant]))
            contenders.append(contender(f"ours {variant}", model, compiled, options.warmup))
    race(contenders, options.rounds, options.steps)

    seconds = {(c.name, c.mode): statistics.median(c.times) for c in contenders}
    spread = {(c.name, c.mode): (min(c.times), max(c.times)) for c in contenders}
    print(
        f"{options.rounds} alternating rounds x {options.steps} steps, {torch.get_num_threads()} threads; "
        f"LLaMA 6x128, 4 heads, SwiGLU 340, vocab 512, T {LENGTH}, batch {BATCH}, fp32, AdamW, clip 1.0"
    )
    print("| model | mode | s/step (median) | min-max | tokens/s | litgpt same mode / this | this / our softmax |")
    print("|---|---|---|---|---|---|---|")
    for c in contenders:
        key = (c.name, c.mode)
        low, high = spread[key]
        print(
            f"| {c.name} | {c.mode} | {seconds[key]:.3f} | {low:.3f}-{high:.3f} | "
            f"{BATCH * LENGTH / seconds[key]:,.0f} | {seconds[('litgpt', c.mode)] / seconds[key]:.2f}x | "
            f"{seconds[key] / seconds[('ours softmax', c.mode)]:.2f}x |"
        )
    if ("litgpt", "compiled") in seconds:
        best = min(seconds[("ours softmax", mode)] for mode in ("eager", "compiled") if ("litgpt", mode) in seconds)
        print(
            f"\nours (fastest mode) vs litgpt compiled: {seconds[('litgpt', 'compiled')] / best:.2f}x (target >= 1.15x)"
        )
    for mode in sorted({c.mode for c in contenders}):
        worst = max(
            seconds[key] / seconds[("ours softmax", mode)]
            for key in seconds
            if key[0].startswith("ours") and key[1] == mode
        )
        print(f"slowest non-softmax variant / our softmax, {mode}: {worst:.2f}x (target <= 1.3x)")


def positive(text: str) -> int:
    """argparse type: an integer >= 1 (a median over no timings has no meaning)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=positive, default=5, help="timed optimizer steps per variant (per round)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (compilation, allocator)")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--vs-litgpt", action="store_true", help="race litgpt's GPT against ours instead")
    parser.add_argument("--rounds", type=positive, default=3, help="alternating rounds of --vs-litgpt")
    parser.add_argument(
        "--modes",
        choices=("both", "eager", "compiled"),
        default="both",
        help="which of eager and torch.compile --vs-litgpt races",
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default, one per core)")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="instead of timing, profile --steps steps of each variant (compiled with --compile) "
        "and print where the time goes",
    )
    options = parser.parse_args()
    if options.threads:
        torch.set_num_threads(options.threads)
    if options.vs_litgpt:
        versus_litgpt(options)
        return
    if options.profile:
        profile_table(options)
        return
    peak = measure_matmul_flops(size=1024, seconds=2.0)
    print(f"fp32 matmul peak (measured, {torch.get_num_threads()} threads): {peak / 1e9:.1f} GFLOP/s")
    trainer_table(options, peak)


if __name__ == "__main__":
    main()
