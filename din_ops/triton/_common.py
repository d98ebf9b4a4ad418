"""What the Triton kernel files share: interpreter switches, autotune configs, layouts, the split of
the float64 statistics into float pairs, and the registration of an operator.

Layouts: every kernel addresses an (N, C, H, W) tensor as ``n * s_n + c * s_c + p * s_p`` with
``p = h * W + w``. That covers NCHW (s_p = 1) and channels_last (s_c = 1, s_p = C) natively, and any
other view whose (h, w) strides are "linear in p"; only other views are copied once.
"""
from __future__ import annotations

import os
from typing import Callable, Optional

import torch
import triton
import triton.language as tl
from torch import Tensor
from torch.library import wrap_triton

from . import interpreting

INTERPRET = interpreting()

# fp32 tl.dot on a GPU: "tf32x3" (three TF32 tensor-core products per element, about float32
# accuracy: relative error ~1e-6 for the sums here) is the default; "ieee" is exact fp32 FMA (slower),
# "tf32" is faster and has ~1e-3 relative error. DIN_OPS_TRITON_FP32_DOT overrides it at import.
# The interpreter always computes exact fp32.
FP32_DOT_PRECISION = os.environ.get("DIN_OPS_TRITON_FP32_DOT", "tf32x3")
if FP32_DOT_PRECISION not in ("tf32x3", "ieee", "tf32"):
    raise ImportError(
        f"DIN_OPS_TRITON_FP32_DOT must be tf32x3, ieee or tf32, got {FP32_DOT_PRECISION!r}"
    )


def launch(kernel):
    """``kernel`` ready for ``[grid](...)``: through ``torch.library.wrap_triton`` on a GPU, where the
    operators are ``triton_op`` and torch.compile traces into the kernel; the kernel itself under the
    interpreter, where the operators are ``custom_op`` (and torch 2.11's ``wrap_triton`` cannot call
    an interpreted kernel)."""
    return kernel if INTERPRET else wrap_triton(kernel)


# DIN_OPS_TRITON_AUTOTUNE=0: the first config only, on a GPU too (test runs: autotuning compiles
# every config, which costs minutes over a test suite and checks nothing more).
AUTOTUNE = os.environ.get("DIN_OPS_TRITON_AUTOTUNE", "1") != "0"


def configs(gpu: list[triton.Config]) -> list[triton.Config]:
    """Autotune configs: all of them on a GPU, only the first under the interpreter (which fails
    with more than one) or with DIN_OPS_TRITON_AUTOTUNE=0."""
    return gpu if AUTOTUNE and not INTERPRET else gpu[:1]


def out_format(x: Tensor) -> torch.memory_format:
    """Memory format of an output like x: channels_last for a channels_last x that is not also plain
    contiguous, contiguous otherwise (the rule of the C++ kernels, csrc/cpu/common.h)."""
    if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def _p_stride(t: Tensor) -> Optional[int]:
    """The stride of p = h * W + w in t, or None when (h, w) are not linear in p."""
    h, w = t.shape[2], t.shape[3]
    if h == 1:
        return t.stride(3) if w > 1 else 1
    if w == 1:
        return t.stride(2)
    return t.stride(3) if t.stride(2) == w * t.stride(3) else None


def addressable(t: Tensor) -> Tensor:
    """t itself when the kernels can address it, otherwise a copy laid out like the outputs."""
    return t if _p_stride(t) is not None else t.contiguous(memory_format=out_format(t))


def strides(t: Tensor) -> tuple[int, int, int]:
    """(s_n, s_c, s_p) of an addressable (N, C, H, W) tensor."""
    sp = _p_stride(t)
    assert sp is not None
    return t.stride(0), t.stride(1), sp


def empty_stats(x: Tensor) -> tuple[Tensor, Tensor]:
    """The (N, C) float64 mean and rstd outputs."""
    shape = (x.shape[0], x.shape[1])
    return x.new_empty(shape, dtype=torch.float64), x.new_empty(shape, dtype=torch.float64)


def split_eps(eps: float) -> tuple[float, float]:
    """eps as two float32 scalars whose float64 sum is eps to ~1e-16 (Triton passes Python floats as
    float32; the statistics add eps in float64 like the C++ kernels)."""
    hi = float(torch.tensor(eps, dtype=torch.float32))
    return hi, float(eps - hi)


def acc_is_f64(t: Tensor) -> bool:
    """Statistics and products accumulate in float64 for float64 data, float32 otherwise."""
    return t.dtype == torch.float64


def dot_upcast(t: Tensor) -> bool:
    """Whether tl.dot operands are upcast to float32: only under the interpreter, whose bf16/fp16 dot
    is wrong; on a GPU, 16-bit operands go to the tensor cores as they are."""
    return INTERPRET and t.dtype in (torch.float16, torch.bfloat16)


def dot_precision(t: Tensor) -> str:
    return FP32_DOT_PRECISION if (t.dtype == torch.float32 and not INTERPRET) else "ieee"


def sm_count(device: torch.device) -> int:
    """Streaming multiprocessors of a CUDA device (4 stands in under the interpreter)."""
    if device.type != "cuda":
        return 4
    return torch.cuda.get_device_properties(device).multi_processor_count


def define_op(name: str, impl: Callable, fake: Callable):
    """Registers ``din_ops::<name>``: a triton_op on a GPU (its body is its own fake kernel, and
    torch.compile traces the wrap_triton launches in it), a custom_op with ``fake`` under the
    interpreter."""
    qualname = f"din_ops::{name}"
    if INTERPRET:
        op = torch.library.custom_op(qualname, mutates_args=())(impl)
        op.register_fake(fake)
    else:
        op = torch.library.triton_op(qualname, mutates_args=())(impl)
    return op


def no_double_backward(name: str):
    def backward(ctx, *grads):
        raise RuntimeError(
            f"din_ops: double backward through {name} is not supported "
            "(use backend='reference' for higher-order gradients)"
        )

    return backward


def register_no_double_backward(op, name: str) -> None:
    op.register_autograd(no_double_backward(name), setup_context=lambda ctx, inputs, output: None)


# ---- pieces shared by the kernels -------------------------------------------------------------


@triton.jit
def to_acc(v, ACC_F64: tl.constexpr):
    """v in the accumulation type (float64 for float64 data, float32 otherwise)."""
    if ACC_F64:
        out = v.to(tl.float64)
    else:
        out = v.to(tl.float32)
    return out


@triton.jit
def to_dot(v, like, UPCAST: tl.constexpr):
    """v as a tl.dot operand: the dtype of `like`'s elements, or float32 when UPCAST."""
    if UPCAST:
        out = v.to(tl.float32)
    else:
        out = v.to(like.dtype.element_ty)
    return out


@triton.jit
def dot_acc(a, b, acc, PRECISION: tl.constexpr):
    """acc + a @ b. out_dtype is spelled out: triton 3.6 otherwise takes float32 even for a float64
    accumulator (and rejects the float64 dot)."""
    return tl.dot(a, b, acc, input_precision=PRECISION, out_dtype=acc.dtype)


@triton.jit
def split_mean(mean64, ACC_F64: tl.constexpr):
    """The float64 mean as hi + lo in the accumulation type: ((x - hi) - lo) is then as accurate as
    x - mean in float64 (csrc/include/din_ops/math.h, split_mean)."""
    if ACC_F64:
        hi = mean64
        lo = mean64 * 0.0
    else:
        hi = mean64.to(tl.float32)
        lo = (mean64 - hi.to(tl.float64)).to(tl.float32)
    return hi, lo


@triton.jit
def plane_stats(x_rows, c_mask, P, s_p, eps_hi, eps_lo,
                ACC_F64: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    """Mean and rstd (float64, [BLOCK_C]) of the planes starting at the pointers ``x_rows``.

    Shifted sums in the accumulation type around each plane's first element, combined in float64 as
    in math.h's moments_from_shifted_sums: the variance survives a mean of 1e6.
    """
    shift = to_acc(tl.load(x_rows, mask=c_mask, other=0.0), ACC_F64)
    s1 = to_acc(tl.zeros([BLOCK_C, BLOCK_P], dtype=tl.float32), ACC_F64)
    s2 = to_acc(tl.zeros([BLOCK_C, BLOCK_P], dtype=tl.float32), ACC_F64)
    for p0 in range(0, P, BLOCK_P):
        p = p0 + tl.arange(0, BLOCK_P)
        m = c_mask[:, None] & (p < P)[None, :]
        v = to_acc(tl.load(x_rows[:, None] + p[None, :].to(tl.int64) * s_p, mask=m, other=0.0), ACC_F64)
        d = tl.where(m, v - shift[:, None], 0.0)
        s1 += d
        s2 += d * d
    m1 = tl.sum(s1, axis=1).to(tl.float64) / P
    var = tl.sum(s2, axis=1).to(tl.float64) / P - m1 * m1
    var = tl.maximum(var, 0.0)
    mean = shift.to(tl.float64) + m1
    eps = (var * 0.0 + eps_hi) + eps_lo  # eps in float64 (hi + lo is exact there)
    rstd = 1.0 / tl.sqrt(var + eps)
    return mean, rstd
