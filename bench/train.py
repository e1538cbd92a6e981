"""Training throughput (tokens/s) and MFU of the trainer's optimizer step at the `tiny` preset.

The CPU benchmark shape of docs/reference.md: LLaMA, 6 layers, n_embd 128, 4 heads, vocab 512,
block 256, micro batch 32, fp32, AdamW (0.9, 0.95), lr 3e-3 -- one micro-batch per optimizer step.
Each row times `lit_gpt.trainer.train_step` (forward, backward, clipping, AdamW) on random token
batches, median over `--steps` steps after `--warmup` steps. MFU is the model FLOPs of
`lit_gpt.flops` (about 80 GFLOP per step for softmax) over the fp32 matmul peak measured here first.

    python bench/train.py                       # eager
    python bench/train.py --compile             # adds a torch.compile column
"""

from __future__ import annotations

import argparse
import statistics
import time

import lightning as L
import torch

from lit_gpt.flops import estimated_flops_per_step
from lit_gpt.logging_utils import measure_matmul_flops
from lit_gpt.optim import make_optimizer
from lit_gpt.train_args import TrainArgs
from lit_gpt.trainer import RNGState, build_model, train_step

VARIANTS = {
    "softmax": {},
    "sigmoid, no norm": {"attn_score": "sigmoid", "attn_normalize": "none"},
    "KV-bias (k*, v*)": {"k_bias": True, "v_bias": True},
    "window 64": {"window_size": 64},
}


def random_batches(vocab_size: int, batch: int, length: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    while True:
        yield torch.randint(0, vocab_size, (batch, length + 1), generator=generator)


def time_variant(overrides: dict, compile_model: bool, steps: int, warmup: int) -> tuple[float, float]:
    """(median seconds per optimizer step, model FLOPs per step)."""
    args = TrainArgs(model_name="tiny", model=overrides, global_batch_size=32, micro_batch_size=32,
                     learning_rate=3e-3, min_lr=3e-3, warmup_steps=0, max_step=steps + warmup,
                     compile=compile_model, logger="none", progress_bar=False, eval_sink=False)
    fabric = L.Fabric(accelerator="cpu", devices=1, precision="32-true")
    torch.manual_seed(0)
    config = args.model_config()
    model = build_model(fabric, config, args)
    optimizer = fabric.setup_optimizers(make_optimizer(model, args.learning_rate, args.weight_decay,
                                                       (args.beta1, args.beta2)))
    state = {"model": model, "optimizer": optimizer, "rng": RNGState(), "iter_num": 0, "step_count": 0,
             "tokens_seen": 0}
    batches = random_batches(config.vocab_size, args.micro_batch_size, config.block_size)
    times = []
    for step in range(warmup + steps):
        started = time.perf_counter()
        train_step(fabric, state, batches, args, accumulation=1)
        if step >= warmup:
            times.append(time.perf_counter() - started)
    return statistics.median(times), estimated_flops_per_step(config, args.micro_batch_size, config.block_size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5, help="timed optimizer steps per variant")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (compilation, allocator)")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    options = parser.parse_args()

    peak = measure_matmul_flops(size=1024, seconds=2.0)
    print(f"fp32 matmul peak (measured, {torch.get_num_threads()} threads): {peak / 1e9:.1f} GFLOP/s")
    modes = [False, True] if options.compile else [False]
    header = "| variant | GFLOP/step |" + "".join(
        f" {'compiled' if c else 'eager'} s/step | tokens/s | MFU |" for c in modes)
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for name in options.variants:
        cells = []
        for compile_model in modes:
            seconds, flops = time_variant(VARIANTS[name], compile_model, options.steps, options.warmup)
            cells.append(f" {seconds:.3f} | {32 * 256 / seconds:,.0f} | {flops / seconds / peak:.1%} |")
        print(f"| {name} | {flops / 1e9:.1f} |" + "".join(cells), flush=True)


if __name__ == "__main__":
    main()
