"""dynamic_instance_norm (1x1, the paper's default) against the way PyTorch users write it today and
the bare GEMM.

Providers, all in the same run:
  din_ops backends : din_ops.dynamic_instance_norm(x, w, b, backend=...) for every available backend
  torch            : F.instance_norm, then F.conv2d with the batch folded into the groups
  bmm (floor)      : torch.bmm of the same shapes, with no normalization at all: for forward the
                     product W @ x, for forward+backward the three products W @ x, gy @ x^T and W^T @ gy
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

import din_ops

from .registry import Floor, OpBench, Target, Work

SHAPES = [(8, 64, 128, 128), (8, 128, 64, 64), (4, 256, 32, 32)]


def torch_way(x, w, b):
    n, c, h, wd = x.shape
    co = w.shape[1]
    xh = F.instance_norm(x)
    y = F.conv2d(xh.reshape(1, n * c, h, wd), w.reshape(n * co, c, 1, 1), b.reshape(-1), groups=n)
    return y.reshape(n, co, h, wd)


def _inputs(shape, dtype, device):
    n, c, h, w = shape
    x = torch.randn(n, c, h, w, dtype=dtype, device=device)
    weight = torch.randn(n, c, c, dtype=dtype, device=device) / c**0.5
    bias = torch.randn(n, c, dtype=dtype, device=device)
    return [x, weight, bias]


def _bmm_fwd(x, w, b):
    xv = x.flatten(2)
    return lambda: torch.bmm(w, xv)


def _bmm_fwdbwd(x, w, b, gy):
    xv, gv = x.flatten(2), gy.flatten(2)
    xT, wT = xv.transpose(1, 2), w.transpose(1, 2).contiguous()
    # The three products of forward + backward (y, grad_weight, grad_x), nothing else.
    return lambda: (torch.bmm(w, xv), torch.bmm(gv, xT), torch.bmm(wT, gv))


def _work(shape, itemsize):
    n, c, h, w = shape
    flops = 2.0 * n * c * c * h * w
    size = n * c * h * w * itemsize
    return Work(fwd_bytes=2 * size, fwdbwd_bytes=5 * size, fwd_flops=flops, fwdbwd_flops=3 * flops)


BENCHES = [
    OpBench(
        name="dynamic_instance_norm_1x1",
        title="dynamic_instance_norm 1x1, Co = C",
        inputs=_inputs,
        din=lambda backend: lambda x, w, b: din_ops.dynamic_instance_norm(x, w, b, backend=backend),
        pytorch=torch_way,
        floor=Floor("bmm", fwd=_bmm_fwd, fwdbwd=_bmm_fwdbwd,
                    doc="torch.bmm W @ x (forward); W @ x, gy @ x^T, W^T @ gy (forward+backward)"),
        work=_work,
        unit="GFLOP/s",
        targets=SHAPES,
        checks=[
            Target(None, "fwd", "cuda", "over_floor", 1.3, "issue 9"),
            Target(None, "fwd+bwd", "cuda", "speedup", 2.0, "issue 9"),
        ],
    )
]


def run(quick: bool = False, dtype: torch.dtype = torch.float32) -> list[dict]:
    """This op's table (target shapes, or tiny ones with quick) and its rows."""
    from .runner import run_module

    return run_module(BENCHES, quick, dtype)
