"""The prepared GPU check: one command, one GPU, about 8 minutes, one verdict line per check.

    bash scripts/gpu_check.sh                 # on an H100/H200 (or `make gpu-check`)
    bash scripts/gpu_check.sh --dry-run       # the CPU rehearsal at tiny sizes (CI runs it)
    bash scripts/gpu_check.sh --only resume   # rerun one check after a fix

Checks, in this order (the first is the one no other machine here can make):
- kernels: the tests marked `gpu` (tests/test_gpu_*.py): every fused attention backend against the eager
  reference, forward and backward, fp32 and bf16, as a pytest run of its own.
- throughput: the 60M preset (head size 96) at T 2048 in bf16-mixed, compiled, for softmax, sigmoid without
  normalisation, KV-bias and the learned sink logit: tokens/s, MFU against the device's datasheet dense bf16
  peak, peak memory, and the attention backend each variant ran on. Two goals are judged from these rows.
- big step: one optimizer step of the 1B preset with activation checkpointing (uncompiled), for its memory.
- resume: a run is killed (SIGKILL) after its checkpoint and resumed in a fresh process; its losses must
  equal those of the uninterrupted run.

Results go to `<out_dir>/gpu_check.json` and `<out_dir>/gpu_check.md`; the exit status is 1 when a check
fails (a goal that is missed is a finding, not a failure).

What it needs: torch, Lightning and pytest -- not jsonargparse, litdata or wandb, which the GPU machine
lacks. So it does not go through `lit_gpt.training.trainer` (whose data pipeline imports litdata): the model and
fused AdamW train under Lightning Fabric directly, on tokens drawn with `torch.randint` as a pure function
of the step, and the resume check saves with the project's atomic checkpoint writer and reloads with
`fabric.load`.

`--dry-run` rehearses every check on the CPU at tiny sizes, so the script cannot rot between GPU runs:
fp32 and uncompiled (bf16 autocast and compilation cost minutes on a CPU and prove nothing about the GPU),
FlexAttention forward only (it has no CPU backward), and no judgement of the GPU goals.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ElementTree
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Iterator, Optional

import lightning as L
import torch
import torch.nn.functional as F

from lit_gpt.core.errors import UserError, run_cli
from lit_gpt.core.files import human_size, output_folder, write_atomic, write_json
from lit_gpt.model.config import Config
from lit_gpt.model.flops import estimated_flops_per_step
from lit_gpt.model.gpt import GPT, Block
from lit_gpt.model.variants import ATTENTION_VARIANTS
from lit_gpt.training.checkpoint import save_atomic
from lit_gpt.training.loggers import measure_matmul_flops, peak_memory
from lit_gpt.training.optim import make_optimizer

REPO = Path(__file__).resolve().parents[1]
CHECKS = ("kernels", "throughput", "big_step", "resume")
THROUGHPUT_VARIANTS = {
    "softmax": "softmax",
    "sigmoid, no norm": "sigmoid",
    "KV-bias": "kv_bias",
    "sink logit": "sink_logit",
}
MFU_GOAL = 0.45
"""60M at T 2048 in bf16 on H100/H200 (llm-foundry's 125M reaches ~44.5% on A100, TinyLlama's 1.1B 56%)."""
SIGMOID_GOAL = 0.9
"""Sigmoid without normalisation (FlexAttention) against softmax, tokens/s."""
# Datasheet dense bf16 peaks, first match on the device name wins (Lightning's table lists some with sparsity).
DENSE_BF16_PEAK = (
    ("h200 nvl", 835e12),
    ("h200", 989.4e12),
    ("h100 nvl", 835e12),
    ("h100 pcie", 756e12),
    ("h100", 989.4e12),
    ("a100", 312e12),
)
RESUME_TOLERANCE = {"cpu": 0.0, "cuda": 1e-3}
"""Largest |loss difference| a resumed run may show: none on the CPU; on CUDA some backward kernels add in a
varying order (atomics), so bit-identity is not promised there and the difference is reported."""


@dataclass(frozen=True)
class Sizes:
    """Everything that differs between the GPU check and its CPU rehearsal."""

    device: str
    precision: str
    compile: bool
    preset: str
    block_size: int
    micro_batch: int
    warmup: int
    steps: int
    big_preset: str
    big_block_size: int
    big_batch: int
    resume_block_size: int
    resume_batch: int
    resume_steps: int
    timeout: int
    """Seconds a check's subprocess (the pytest run, the killed and the resumed run) may take."""


GPU = Sizes(
    device="cuda",
    precision="bf16-mixed",
    compile=True,
    preset="tinyllama_60M",
    block_size=2048,
    micro_batch=8,
    warmup=3,
    steps=10,
    big_preset="tinyllama_1_1b",
    big_block_size=2048,
    big_batch=4,
    resume_block_size=512,
    resume_batch=4,
    resume_steps=6,
    timeout=300,
)
REHEARSAL = Sizes(
    device="cpu",
    precision="32-true",
    compile=False,
    preset="micro",
    block_size=64,
    micro_batch=2,
    warmup=1,
    steps=2,
    big_preset="micro",
    big_block_size=64,
    big_batch=2,
    resume_block_size=32,
    resume_batch=2,
    resume_steps=4,
    timeout=240,
)


@dataclass
class Verdict:
    check: str
    verdict: str
    """pass | fail | skip, or for a goal: met | missed | not judged."""
    detail: str

    def line(self) -> str:
        return f"{self.verdict.upper():10} {self.check}: {self.detail}"


# ------------------------------------------------------------------------------------------ training
def make_fabric(sizes: Sizes) -> L.Fabric:
    """A one-device Fabric, with the memory of the previous run given back and the peak counter reset."""
    fabric = L.Fabric(accelerator=sizes.device, devices=1, precision=sizes.precision)
    gc.collect()
    if fabric.device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(fabric.device)
    return fabric


def build(fabric: L.Fabric, config: Config, compile_model: bool, checkpointing: bool = False):
    """(model, fused AdamW) from seed 0, set up as the trainer sets them up (`lit_gpt.training.trainer.build_model`)."""
    torch.manual_seed(0)
    with fabric.init_module():
        model = GPT(config)
    if checkpointing:
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
    if compile_model:
        model = torch.compile(model)
    model = fabric.setup(model)
    optimizer = fabric.setup_optimizers(make_optimizer(model, 3e-4, 0.1, (0.9, 0.95)))
    return model, optimizer


def batch_at(step: int, vocab_size: int, batch: int, block_size: int) -> torch.Tensor:
    """The (batch, block_size + 1) tokens of optimizer step `step`: a pure function of the step, so a resumed
    run reads what the uninterrupted one read."""
    generator = torch.Generator().manual_seed(1_000_003 + step)
    return torch.randint(0, vocab_size, (batch, block_size + 1), generator=generator)


def train(fabric: L.Fabric, model, optimizer, batch: int, first: int, last: int) -> Iterator[torch.Tensor]:
    """Optimizer steps `first`..`last - 1` (forward, backward, clipping, AdamW); yields each loss, unsynced."""
    config = model.config
    for step in range(first, last):
        tokens = fabric.to_device(batch_at(step, config.vocab_size, batch, config.block_size))
        logits = model(tokens[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1).float(), tokens[:, 1:].flatten())
        fabric.backward(loss)
        fabric.clip_gradients(model, optimizer, max_norm=1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        yield loss.detach()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def attention_backends(model) -> str:
    """The backends the model's attention layers chose (after a step)."""
    names = {backend.name for module in model.modules() for backend in getattr(module, "backends", {}).values()}
    return ", ".join(sorted(names)) or "?"


def rate(flops: float) -> str:
    return f"{flops / 1e12:.0f} TFLOP/s" if flops >= 1e12 else f"{flops / 1e9:.0f} GFLOP/s"


def peak_flops(device: torch.device) -> tuple[float, str]:
    """(peak FLOP/s, where it comes from): the datasheet dense bf16 figure on known GPUs, measured elsewhere."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device).lower()
        known = next((peak for key, peak in DENSE_BF16_PEAK if key in name), None)
        if known:
            return known, "datasheet dense bf16"
    return measure_matmul_flops(device=device), "measured fp32 matmul"


def timed_run(
    sizes: Sizes, config: Config, batch: int, compile_model: bool, warmup: int, steps: int, checkpointing: bool = False
) -> dict:
    """Seconds per step (the mean over `steps` after `warmup`), last loss, peak memory, attention backends."""
    fabric = make_fabric(sizes)
    if compile_model:
        torch._dynamo.reset()  # each variant compiles afresh, never past dynamo's recompilation limit
    model, optimizer = build(fabric, config, compile_model, checkpointing)
    losses = train(fabric, model, optimizer, batch, 0, warmup + steps)
    for _ in range(warmup):
        next(losses)
    synchronize(fabric.device)
    started = time.perf_counter()
    last = [loss for loss in losses][-1]
    synchronize(fabric.device)
    seconds = (time.perf_counter() - started) / steps
    result = dict(
        seconds_per_step=seconds,
        tokens_per_s=batch * config.block_size / seconds,
        flops_per_step=estimated_flops_per_step(config, batch, config.block_size),
        last_loss=last.item(),
        peak_memory=peak_memory(fabric.device),
        backend=attention_backends(model),
    )
    del model, optimizer
    return result


# ------------------------------------------------------------------------------------------ checks
def check_kernels(sizes: Sizes, out_dir: Path) -> list[Verdict]:
    """The `gpu` tests in a pytest run of their own; its JUnit report gives the counts."""
    report = out_dir / "gpu_tests.xml"
    files = sorted(str(path.relative_to(REPO)) for path in (REPO / "tests").glob("test_gpu_*.py"))
    env = dict(os.environ, GPU_CHECK_DEVICE=sizes.device)
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-m",
        "gpu",
        "-p",
        "no:cacheprovider",
        f"--junitxml={report}",
        *files,
    ]
    try:
        done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=sizes.timeout)
    except subprocess.TimeoutExpired:
        return [Verdict("kernels", "fail", f"the gpu tests did not finish in {sizes.timeout} s")]
    (out_dir / "gpu_tests.log").write_text(done.stdout + done.stderr)
    if not report.exists():
        return [
            Verdict(
                "kernels", "fail", f"pytest exited {done.returncode} without a report; see {out_dir / 'gpu_tests.log'}"
            )
        ]
    suite = ElementTree.parse(report).getroot()
    suite = suite.find("testsuite") if suite.tag == "testsuites" else suite
    counts = {key: int(suite.get(key, 0)) for key in ("tests", "failures", "errors", "skipped")}
    failed = [
        case.get("name")
        for case in suite.iter("testcase")
        if case.find("failure") is not None or case.find("error") is not None
    ]
    passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    detail = f"{passed} passed, {counts['skipped']} skipped (reasons in gpu_tests.xml), {len(failed)} failed"
    if failed:
        detail += f": {', '.join(failed[:5])}{' ...' if len(failed) > 5 else ''}"
    ok = not failed and done.returncode == 0 and passed > 0
    return [Verdict("kernels", "pass" if ok else "fail", detail)]


def check_throughput(sizes: Sizes, rows: list[dict]) -> list[Verdict]:
    """The four variants at the preset's shape, then the two goals judged from their rows."""
    verdicts = []
    device = torch.device(sizes.device)
    peak, peak_source = peak_flops(device)
    for label, variant in THROUGHPUT_VARIANTS.items():
        config = Config.from_name(sizes.preset, block_size=sizes.block_size, **ATTENTION_VARIANTS[variant])
        result = timed_run(sizes, config, sizes.micro_batch, sizes.compile, sizes.warmup, sizes.steps)
        mfu = result["flops_per_step"] / result["seconds_per_step"] / peak
        rows.append(dict(variant=label, **result, mfu=mfu, peak_flops=peak, peak_source=peak_source))
        verdicts.append(
            Verdict(
                f"throughput {label}",
                "pass" if math.isfinite(result["last_loss"]) else "fail",
                f"{result['tokens_per_s']:,.0f} tokens/s, MFU {mfu:.1%} of {rate(peak)} "
                f"({peak_source}), peak memory {human_size(result['peak_memory'])}, backend "
                f"{result['backend']}, loss {result['last_loss']:.3f}",
            )
        )
    return verdicts + judge_goals(sizes, rows)


def judge_goals(sizes: Sizes, rows: list[dict]) -> list[Verdict]:
    by_variant = {row["variant"]: row for row in rows}
    softmax, sigmoid = by_variant["softmax"], by_variant["sigmoid, no norm"]
    ratio = sigmoid["tokens_per_s"] / softmax["tokens_per_s"]
    goals = [
        ("goal softmax MFU", softmax["mfu"] >= MFU_GOAL, f"{softmax['mfu']:.1%} (goal >= {MFU_GOAL:.0%})"),
        (
            "goal sigmoid speed",
            ratio >= SIGMOID_GOAL,
            f"{ratio:.2f}x softmax tokens/s on {sigmoid['backend']} (goal >= {SIGMOID_GOAL}x)",
        ),
    ]
    if sizes != GPU:
        return [
            Verdict(name, "not judged", f"{detail}; the goals hold for the GPU shape only") for name, _, detail in goals
        ]
    return [Verdict(name, "met" if met else "missed", detail) for name, met, detail in goals]


def check_big_step(sizes: Sizes, rows: list[dict]) -> list[Verdict]:
    """One step of the 1B preset with activation checkpointing, after one that allocates and warms up."""
    config = Config.from_name(sizes.big_preset, block_size=sizes.big_block_size)
    try:
        result = timed_run(sizes, config, sizes.big_batch, compile_model=False, warmup=1, steps=1, checkpointing=True)
    except torch.OutOfMemoryError as error:
        return [Verdict("big step", "fail", f"out of memory at micro batch {sizes.big_batch}: {str(error)[:120]}")]
    peak, peak_source = peak_flops(torch.device(sizes.device))
    mfu = result["flops_per_step"] / result["seconds_per_step"] / peak
    rows.append(
        dict(
            variant=f"{sizes.big_preset} (activation checkpointing, uncompiled)",
            **result,
            mfu=mfu,
            peak_flops=peak,
            peak_source=peak_source,
        )
    )
    return [
        Verdict(
            "big step",
            "pass",
            f"{sizes.big_preset}, micro batch {sizes.big_batch} x {sizes.big_block_size}: "
            f"peak memory {human_size(result['peak_memory'])}, "
            f"{result['seconds_per_step']:.2f} s/step, MFU {mfu:.1%} (model FLOPs; the "
            f"recomputed forward is not counted)",
        )
    ]


# -- resume: the run that is killed and the run that resumes are child processes of this script
def resume_setup(sizes: Sizes):
    fabric = make_fabric(sizes)
    config = Config.from_name(sizes.preset, block_size=sizes.resume_block_size)
    model, optimizer = build(fabric, config, compile_model=False)
    return fabric, model, optimizer


def killed_part(sizes: Sizes, checkpoint: Path) -> None:
    """Trains, saves after half the steps, says so, and trains on until it is killed."""
    fabric, model, optimizer = resume_setup(sizes)
    saved_at = sizes.resume_steps // 2
    for step, _ in enumerate(train(fabric, model, optimizer, sizes.resume_batch, 0, 100 * sizes.resume_steps)):
        if step + 1 == saved_at:
            save_atomic(fabric, checkpoint, {"model": model, "optimizer": optimizer, "step": saved_at})
            print(f"saved {checkpoint}", flush=True)


def resumed_part(sizes: Sizes, checkpoint: Path) -> None:
    """Loads the checkpoint and prints the losses of the remaining steps as one JSON line."""
    fabric, model, optimizer = resume_setup(sizes)
    state = {"model": model, "optimizer": optimizer, "step": 0}
    fabric.load(checkpoint, state)
    losses = [
        loss.item() for loss in train(fabric, model, optimizer, sizes.resume_batch, state["step"], sizes.resume_steps)
    ]
    print(json.dumps({"first": state["step"], "losses": losses}), flush=True)


def child(part: str, dry_run: bool, checkpoint: Path) -> list[str]:
    return [
        sys.executable,
        str(Path(__file__).resolve()),
        "--part",
        part,
        "--checkpoint",
        str(checkpoint),
        *(["--dry-run"] if dry_run else []),
    ]


def check_resume(sizes: Sizes, dry_run: bool, out_dir: Path) -> list[Verdict]:
    checkpoint = out_dir / "resume-ckpt.pth"
    checkpoint.unlink(missing_ok=True)
    with open(out_dir / "resume_killed.log", "w") as log:
        killed = subprocess.Popen(
            child("killed", dry_run, checkpoint), cwd=REPO, stdout=subprocess.PIPE, stderr=log, text=True
        )
        stuck = threading.Timer(sizes.timeout, killed.kill)  # a run that never saves is killed all the same
        stuck.start()
        said = next((line for line in killed.stdout if line.startswith("saved")), None)
        killed.kill()
        killed.wait()
        stuck.cancel()
    if said is None or killed.returncode != -signal.SIGKILL:
        return [
            Verdict(
                "resume",
                "fail",
                f"the run to kill exited {killed.returncode} before it was killed after "
                f"its checkpoint; see {out_dir / 'resume_killed.log'}",
            )
        ]
    fabric, model, optimizer = resume_setup(sizes)
    reference = [loss.item() for loss in train(fabric, model, optimizer, sizes.resume_batch, 0, sizes.resume_steps)]
    try:
        resumed = subprocess.run(
            child("resumed", dry_run, checkpoint), cwd=REPO, capture_output=True, text=True, timeout=sizes.timeout
        )
    except subprocess.TimeoutExpired:
        return [Verdict("resume", "fail", f"the resumed run did not finish in {sizes.timeout} s")]
    if resumed.returncode != 0:
        return [
            Verdict(
                "resume",
                "fail",
                f"the resumed run exited {resumed.returncode}: {(resumed.stderr.strip().splitlines() or ['?'])[-1]}",
            )
        ]
    result = json.loads(resumed.stdout.strip().splitlines()[-1])
    expected = reference[result["first"] :]
    difference = max(abs(a - b) for a, b in zip(result["losses"], expected))
    tolerance = RESUME_TOLERANCE[sizes.device]
    ok = len(result["losses"]) == len(expected) and difference <= tolerance
    checkpoint.unlink(missing_ok=True)
    return [
        Verdict(
            "resume",
            "pass" if ok else "fail",
            f"killed (signal {-killed.returncode}) after the checkpoint at step {result['first']}, resumed in "
            f"a new process: steps {result['first'] + 1}-{sizes.resume_steps} differ by at most "
            f"{difference:.1e} from the uninterrupted run (allowed {tolerance:g})",
        )
    ]


# ------------------------------------------------------------------------------------------ report
def markdown(header: dict, verdicts: list[Verdict], rows: list[dict]) -> str:
    lines = [
        f"GPU check, {header['date']}, {header['device']}, torch {header['torch']}"
        f"{' (CPU rehearsal: --dry-run)' if header['dry_run'] else ''}",
        "",
        "| check | verdict | result |",
        "|---|---|---|",
    ]
    lines += [f"| {v.check} | {v.verdict} | {v.detail} |" for v in verdicts]
    if rows:
        lines += ["", "| variant | backend | s/step | tokens/s | MFU | peak memory |", "|---|---|---|---|---|---|"]
        lines += [
            f"| {row['variant']} | {row['backend']} | {row['seconds_per_step']:.3f} | "
            f"{row['tokens_per_s']:,.0f} | {row['mfu']:.1%} | {human_size(row['peak_memory'])} |"
            for row in rows
        ]
    return "\n".join(lines) + "\n"


def device_name(sizes: Sizes) -> str:
    if sizes.device == "cuda":
        return torch.cuda.get_device_name(0)
    return f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"


def run_checks(sizes: Sizes, dry_run: bool, only: list[str], out_dir: Path) -> int:
    header = dict(
        date=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        device=device_name(sizes),
        torch=torch.__version__,
        dry_run=dry_run,
        sizes=asdict(sizes),
    )
    verdicts, rows, seconds = [], [], {}
    for name in only:
        started = time.perf_counter()
        if name == "kernels":
            found = check_kernels(sizes, out_dir)
        elif name == "throughput":
            found = check_throughput(sizes, rows)
        elif name == "big_step":
            found = check_big_step(sizes, rows)
        else:
            found = check_resume(sizes, dry_run, out_dir)
        seconds[name] = round(time.perf_counter() - started, 1)
        for verdict in found:
            print(verdict.line(), flush=True)
        verdicts += found
    header["seconds"] = seconds
    write_json(out_dir / "gpu_check.json", dict(header, checks=[asdict(v) for v in verdicts], throughput=rows))
    write_atomic(out_dir / "gpu_check.md", markdown(header, verdicts, rows))
    print(f"wrote {out_dir / 'gpu_check.json'} and {out_dir / 'gpu_check.md'} ({sum(seconds.values()):.0f} s)")
    return 1 if any(v.verdict == "fail" for v in verdicts) else 0


class OneLineParser(argparse.ArgumentParser):
    """argparse whose refusals reach `run_cli` as one `error:` line and exit 2, not a usage block."""

    def error(self, message: str):
        raise argparse.ArgumentError(None, message)


def parse(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = OneLineParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, exit_on_error=False
    )
    parser.add_argument("--dry-run", action="store_true", help="rehearse every check on the CPU at tiny sizes")
    parser.add_argument(
        "--out_dir",
        type=Path,
        default=REPO / "out" / "gpu_check",
        help="where gpu_check.json and gpu_check.md go (default: out/gpu_check)",
    )
    parser.add_argument("--only", nargs="+", choices=CHECKS, default=list(CHECKS), help="run these checks only")
    parser.add_argument("--part", choices=("killed", "resumed"), help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


class NoGPU(UserError):
    """The check was asked for on a machine without CUDA."""


def main(argv: Optional[list[str]] = None) -> int:
    options = parse(argv)
    sizes = REHEARSAL if options.dry_run else GPU
    if options.part:
        (killed_part if options.part == "killed" else resumed_part)(sizes, options.checkpoint)
        return 0
    if not options.dry_run and not torch.cuda.is_available():
        raise NoGPU(
            "no CUDA GPU here (torch.cuda.is_available() is False); run on a GPU machine, or rehearse on the "
            "CPU with --dry-run"
        )
    return run_checks(sizes, options.dry_run, options.only, output_folder(options.out_dir))


if __name__ == "__main__":
    sys.exit(run_cli(main))
