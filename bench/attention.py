"""Forward + backward time and peak memory of every attention variant, relative to SDPA softmax.

One `CausalSelfAttention` layer (projections, RoPE, slots, gate included) at the 60M model's width
(768, 8 heads of 96), B=1, on CPU; the whole table takes about two minutes on two idle cores. Time is the median over `--repeats` runs after a warm-up; peak memory is
the highest total of CPU bytes allocated during one forward + backward, tracked by the torch
profiler (`profile_memory=True`) from the allocations it sees, so memory that existed before the
step (weights, input) is excluded and every variant is measured the same way. Variants come from
`lit_gpt.model.variants`, the single list of variants the test suite runs over.

    python bench/attention.py                                  # T = 256, 1024, 2048
    python bench/attention.py --lengths 2048 --variants softmax sigmoid --chunk_size 256
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import torch
from torch.profiler import ProfilerActivity, profile

from lit_gpt.model.attention import AttentionRuntime, CausalSelfAttention
from lit_gpt.model.config import Config
from lit_gpt.model.positions import rope_cos_sin
from lit_gpt.model.variants import ATTENTION_VARIANTS

BASELINE = "softmax"


def build(name: str, args: argparse.Namespace, length: int):
    config = Config.from_name(
        "micro", **ATTENTION_VARIANTS[name], n_embd=args.n_embd, n_head=args.n_head, n_layer=1, block_size=length
    )
    torch.manual_seed(0)
    layer = CausalSelfAttention(config, AttentionRuntime(chunk_size=args.chunk_size))
    n_tokens = length + config.sink_tokens
    x = torch.randn(args.batch, n_tokens, config.n_embd, requires_grad=True)
    positions = torch.arange(n_tokens)
    rope = rope_cos_sin(positions, config.head_size, config.rope_base, x.dtype)
    backend = layer.backend(x.device, x.dtype, training=True, aligned=True).name

    def step() -> None:
        y, _ = layer(x, positions, rope)
        y.sum().backward()
        layer.zero_grad(set_to_none=True)
        x.grad = None

    return step, backend


def peak_bytes(step) -> int:
    """Highest net CPU allocation during one call of `step`, from the profiler's memory events."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "trace.json")
        prof.export_chrome_trace(path)
        with open(path) as f:
            events = json.load(f)["traceEvents"]
    memory = sorted(
        (e for e in events if e.get("name") == "[memory]" and e["args"].get("Device Type") == 0), key=lambda e: e["ts"]
    )
    live = peak = 0
    for event in memory:
        live += event["args"]["Bytes"]
        peak = max(peak, live)
    return peak


def seconds(step, repeats: int) -> float:
    """Median wall time; call after `peak_bytes`, which doubles as the warm-up."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 1024, 2048], help="sequence lengths T")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--n_embd", type=int, default=768)
    parser.add_argument("--n_head", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per case (median)")
    parser.add_argument("--chunk_size", type=int, default=0, help="queries per chunk in eager (0 = automatic)")
    parser.add_argument("--variants", nargs="+", default=list(ATTENTION_VARIANTS), choices=list(ATTENTION_VARIANTS))
    args = parser.parse_args()
    names = [BASELINE] + [n for n in args.variants if n != BASELINE]

    # the first case would otherwise also pay one-time costs (thread pool start, allocator growth)
    warm_up, _ = build(BASELINE, args, args.lengths[0])
    warm_up()
    warm_up()

    results: dict[tuple[str, int], tuple[str, float, int]] = {}
    for length in args.lengths:
        for name in names:
            step, backend = build(name, args, length)
            peak = peak_bytes(step)
            results[name, length] = (backend, seconds(step, args.repeats), peak)
            print(f"  measured {name} T={length}", file=sys.stderr, flush=True)

    header = f"{'variant':<28}{'backend':<8}" + "".join(f"{f'T={t} time':>14}{'mem':>8}" for t in args.lengths)
    print(
        f"B={args.batch} n_embd={args.n_embd} n_head={args.n_head}, forward+backward of one attention layer; "
        f"ratios to {BASELINE} (sdpa); baseline absolute values in the first row"
    )
    print(header)
    print("-" * len(header))
    for name in names:
        cells = []
        for length in args.lengths:
            backend, sec, mem = results[name, length]
            base_sec, base_mem = results[BASELINE, length][1:]
            if name == BASELINE:
                cells.append(f"{sec * 1e3:>12.1f}ms{mem / 2**20:>6.0f}MB")
            else:
                cells.append(f"{sec / base_sec:>13.2f}x{mem / base_mem:>7.2f}x")
        print(f"{name:<28}{results[name, args.lengths[0]][0]:<8}" + "".join(cells))


if __name__ == "__main__":
    main()
