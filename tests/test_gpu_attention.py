"""Every fused attention backend against the eager reference, forward and backward, on the GPU.

Marked `gpu`: skipped without CUDA (tests/conftest.py says why); `scripts/gpu_check.sh` runs them on one
GPU, and its dry run rehearses them on the CPU (`GPU_CHECK_DEVICE=cpu`) at smaller sizes, where a backend's
own `supports` decides what can run (FlexAttention: forward only on the CPU).

The known traps each case is there for: FlexAttention at head sizes that are not powers of two (96 at the
paper's 60M preset); sigmoid and elu+1 without normalisation, which read the log-sum-exp back from
FlexAttention (a kernel returning it in base 2 would scale every output); the learned sink logit, whose
head SDPA pads from D + 1 to a multiple of 8 (on CUDA SDPA is held to its fused kernels here, so a head size
they reject fails instead of silently running the unfused math path).

Tolerances are relative to the largest entry of the eager result, which runs in fp32 on the same
(dtype-rounded) inputs: fp32 1e-4 (kernels sum in another order; TF32 stays off), bf16 3e-2 for the output
and 6e-2 for gradients (8 mantissa bits, and backward rounds twice).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import pytest
import torch

from lit_gpt.model.attention import AttentionProblem, AttentionSpec, Eager, MaskSpec
from lit_gpt.model.attention.backends import FUSED

pytestmark = [pytest.mark.gpu, pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")]

TOLERANCE = {torch.float32: (1e-4, 1e-4), torch.bfloat16: (3e-2, 6e-2)}
"""dtype -> (output, gradient) tolerance, relative to the largest entry of the eager reference."""


@dataclass(frozen=True)
class Shape:
    batch: int
    heads: int
    length: int
    window: int


# Long enough on CUDA for several of FlexAttention's 128-row blocks and a window that crosses them.
SHAPES = {"cuda": Shape(batch=2, heads=4, length=256, window=64), "cpu": Shape(batch=1, heads=2, length=24, window=8)}


@dataclass(frozen=True)
class Case:
    """A spec, and which key slots the problem carries: learned k*/v* and/or the learned sink logit."""

    spec: dict = field(default_factory=dict)
    kv_slot: bool = False
    sink_logit: bool = False

    def attention_spec(self, shape: Shape) -> AttentionSpec:
        mask = MaskSpec(window=shape.window) if self.spec.get("window") else MaskSpec()
        spec = {key: value for key, value in self.spec.items() if key != "window"}
        n_slots = int(self.kv_slot) + int(self.sink_logit)
        return AttentionSpec(mask=mask, n_slots=n_slots, slot_logit=self.sink_logit, **spec)


SIGMOID, ELU = dict(score="sigmoid", normalize="none"), dict(score="elu", normalize="none")
CASES = {
    "softmax": Case(),
    "sigmoid": Case(SIGMOID),
    "sigmoid_sum": Case(dict(score="sigmoid")),
    "elu": Case(ELU),
    "elu_sum": Case(dict(score="elu")),
    "window": Case(dict(window=True)),
    "sigmoid_window": Case(dict(SIGMOID, window=True)),
    "kv_bias": Case(kv_slot=True),
    "sigmoid_kv_bias": Case(SIGMOID, kv_slot=True),
    "sink_logit": Case(sink_logit=True),
}
# Every case at the paper's head size; on CUDA the cases with a trap of their own also at 32 and 64 (the CPU
# rehearsal keeps to 96: there FlexAttention runs uncompiled, a second or so a case).
TRAPPED_HEAD_SIZES = (32, 64, 96) if torch.cuda.is_available() else (96,)
HEAD_SIZES = {name: (96,) for name in CASES} | {
    name: TRAPPED_HEAD_SIZES for name in ("softmax", "sigmoid", "sink_logit")
}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def computes(backend: str, case: Case) -> bool:
    """The backend computes this spec on some CUDA device (a kernel it lacks here is a skip, with the reason)."""
    kernel, cuda = FUSED[backend], torch.device("cuda")
    reason = kernel.supports(case.attention_spec(SHAPES["cuda"]), cuda, torch.bfloat16, training=True)
    return reason is None or reason == kernel.device_reason(cuda, torch.bfloat16, training=True)


PARAMS = [
    pytest.param(backend, name, head_size, dtype, id=f"{backend}-{name}-d{head_size}-{dtype}")
    for backend in FUSED
    for name, case in CASES.items()
    if computes(backend, case)
    for head_size in HEAD_SIZES[name]
    for dtype in DTYPES
]


def make_leaves(
    case: Case, shape: Shape, head_size: int, dtype: torch.dtype, device: torch.device
) -> dict[str, torch.Tensor]:
    """The tensors gradients are checked for: q, k, v in `dtype`, the learned slots in fp32 (parameters are
    fp32 under bf16-mixed training)."""
    generator = torch.Generator().manual_seed(head_size)

    def leaf(*size: int, scale: float = 1.0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return (scale * torch.randn(*size, generator=generator)).to(device, dtype).requires_grad_()

    leaves = {name: leaf(shape.batch, shape.heads, shape.length, head_size, dtype=dtype) for name in "qkv"}
    if case.kv_slot:
        leaves.update(k_star=leaf(shape.heads, 1, head_size), v_star=leaf(shape.heads, 1, head_size))
    if case.sink_logit:
        leaves["sink_logit"] = leaf(shape.heads, 1, scale=2.0)
    return leaves


def build_problem(case: Case, leaves: dict[str, torch.Tensor]) -> AttentionProblem:
    """The problem the attention layer builds from these leaves: k*/v* first, then the sink slot (zero key
    and value, learned score)."""
    q, k, v = leaves["q"], leaves["k"], leaves["v"]
    heads, length, head_size = q.shape[1], q.shape[2], q.shape[3]
    zero = q.new_zeros(heads, 1, head_size, dtype=torch.float32)
    slot_k, slot_v, slot_bias = [], [], None
    if case.kv_slot:
        slot_k.append(leaves["k_star"])
        slot_v.append(leaves["v_star"])
    if case.sink_logit:
        slot_k.append(zero)
        slot_v.append(zero)
        slot_bias = torch.cat((zero[:, :, 0].expand(-1, len(slot_k) - 1), leaves["sink_logit"]), dim=1)
    slots = dict(slot_k=torch.cat(slot_k, dim=1), slot_v=torch.cat(slot_v, dim=1)) if slot_k else {}
    positions = torch.arange(length, device=q.device)
    return AttentionProblem(q, k, v, positions, positions, aligned=True, slot_bias=slot_bias, **slots)


def fused_kernels_only(backend: str, device: torch.device):
    """On CUDA, SDPA may use its fused kernels only: a head size they reject raises instead of falling back."""
    if backend != "sdpa" or device.type != "cuda":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION])


def relative_error(result: torch.Tensor, reference: torch.Tensor) -> float:
    return ((result.float() - reference).abs().max() / reference.abs().max().clamp(min=1e-12)).item()


@pytest.fixture(autouse=True)
def fresh_compilation():
    """Each case compiles FlexAttention anew: past dynamo's recompilation limit it would silently run the
    uncompiled reference path instead of the kernel under test."""
    torch._dynamo.reset()
    yield


@pytest.mark.parametrize("backend, name, head_size, dtype", PARAMS)
def test_fused_backend_matches_eager_forward_and_backward(gpu_device, backend, name, head_size, dtype):
    case, shape, dtype = CASES[name], SHAPES[gpu_device.type], DTYPES[dtype]
    spec = case.attention_spec(shape)
    kernel = FUSED[backend]
    cannot_run = kernel.supports(spec, gpu_device, dtype, training=False)
    if cannot_run:
        pytest.skip(cannot_run)
    cannot_train = kernel.supports(spec, gpu_device, dtype, training=True)
    leaves = make_leaves(case, shape, head_size, dtype, gpu_device)
    reference_leaves = {key: leaf.detach().float().requires_grad_() for key, leaf in leaves.items()}
    reference = Eager()(build_problem(case, reference_leaves), spec)
    if cannot_train:
        leaves = {key: leaf.detach() for key, leaf in leaves.items()}
    output_tolerance, gradient_tolerance = TOLERANCE[dtype]
    with fused_kernels_only(backend, gpu_device):
        output = kernel(build_problem(case, leaves), spec)
    assert output.dtype == dtype and output.shape == reference.shape
    error = relative_error(output, reference)
    assert error <= output_tolerance, f"forward: relative error {error:.2e} > {output_tolerance:.0e}"
    if cannot_train:
        pytest.skip(f"forward matches (relative error {error:.1e}); backward not checked: {cannot_train}")
    upstream = torch.randn(reference.shape, generator=torch.Generator().manual_seed(1)).to(gpu_device)
    reference.backward(upstream)
    with fused_kernels_only(backend, gpu_device):
        output.backward(upstream.to(dtype))
    for key, leaf in leaves.items():
        error = relative_error(leaf.grad, reference_leaves[key].grad)
        assert error <= gradient_tolerance, f"gradient of {key}: relative error {error:.2e} > {gradient_tolerance:.0e}"


def test_flex_returns_the_natural_log_sum_exp(gpu_device):
    """sigmoid and elu+1 without normalisation multiply FlexAttention's output by exp(lse): an lse in another
    base would scale every output of those variants."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    shape, head_size = SHAPES[gpu_device.type], 96
    generator = torch.Generator().manual_seed(0)
    q, k, v = (
        torch.randn(shape.batch, shape.heads, shape.length, head_size, generator=generator).to(gpu_device)
        for _ in range(3)
    )
    block_mask = create_block_mask(
        lambda b, h, q_idx, kv_idx: kv_idx <= q_idx, None, None, shape.length, shape.length, device=gpu_device
    )
    attend = torch.compile(flex_attention) if gpu_device.type == "cuda" else flex_attention
    with torch.no_grad():
        _, lse = attend(q, k, v, block_mask=block_mask, return_lse=True)
    scores = q @ k.transpose(-1, -2) / head_size**0.5
    causal = torch.ones(shape.length, shape.length, dtype=torch.bool, device=gpu_device).tril()
    expected = scores.masked_fill(~causal, float("-inf")).logsumexp(-1)
    torch.testing.assert_close(lse.float(), expected, rtol=1e-4, atol=1e-4)
