"""k x k dynamic instance norm (depthwise and grouped, padding 1) against the PyTorch composition.

Providers, all in the same run:
  din_ops backends : din_ops.dynamic_instance_norm with a k x k kernel, for every available backend
  torch            : F.instance_norm, then F.conv2d with the batch folded into the groups
  copy (floor)     : x.clone() (forward) and x.clone(), torch.add(x, gy) (forward+backward): the bytes
                     any implementation must read and write. For depthwise the arithmetic is small
                     and this is the real bound; for grouped convolutions the GEMMs dominate, so the
                     copy floor is far below what is reachable (read GFLOP/s there).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

import din_ops
from din_ops import reference

from .registry import Floor, OpBench, Target, Work

COPY_FLOOR = Floor(
    "copy",
    fwd=lambda x, w, b: lambda: x.clone(),
    fwdbwd=lambda x, w, b, gy: lambda: (x.clone(), torch.add(x, gy)),
    doc="x.clone() (forward); x.clone() and torch.add(x, gy) (forward+backward): the same bytes",
)


def torch_way(x, w, b, groups, padding=1):
    """IN, then F.conv2d with the batch folded into the groups: the way PyTorch users write it."""
    return reference.dynamic_conv2d(F.instance_norm(x), w, b, padding=padding, groups=groups)


def _bench(name: str, title: str, depthwise: bool, groups: int, k: int, targets, checks) -> OpBench:
    def inputs(shape, dtype, device):
        n, c, h, w = shape
        g = c if depthwise else groups
        x = torch.randn(n, c, h, w, dtype=dtype, device=device)
        wt = torch.randn(n, c, c // g, k, k, dtype=dtype, device=device) / (k * (c // g) ** 0.5)
        b = torch.randn(n, c, dtype=dtype, device=device)
        return [x, wt, b]

    def work(shape, itemsize):
        n, c, h, w = shape
        g = c if depthwise else groups
        flops = 2.0 * n * c * (c // g) * k * k * h * w
        size = n * c * h * w * itemsize
        return Work(fwd_bytes=2 * size, fwdbwd_bytes=5 * size, fwd_flops=flops, fwdbwd_flops=3 * flops)

    def din(backend):
        def call(x, w, b):
            g = x.shape[1] // w.shape[2]
            return din_ops.dynamic_instance_norm(x, w, b, padding=k // 2, groups=g, backend=backend)

        return call

    def plain(x, w, b):
        return torch_way(x, w, b, x.shape[1] // w.shape[2], padding=k // 2)

    return OpBench(
        name=name, title=title, inputs=inputs, din=din, pytorch=plain, floor=COPY_FLOOR, work=work,
        unit="GB/s" if depthwise else "GFLOP/s", targets=targets, checks=checks,
        accepts=lambda shape: depthwise or shape[1] % groups == 0,
        backends=("cpu", "cuda", "reference"),  # the Triton backend covers only the 1x1 kernel
    )


def _speedups(shapes, bound, source):
    return [Target(s, p, "cpu", "speedup", bound, source) for s in shapes for p in ("fwd", "fwd+bwd")]


def _issue4(shapes, bound):
    return _speedups(shapes, bound, "issue 4")


BENCHES = [
    _bench("dynamic_instance_norm_dw3x3", "dynamic_instance_norm depthwise 3x3 (groups = C = Co), padding 1",
           True, 0, 3, [(8, 128, 64, 64), (8, 64, 128, 128)],
           _issue4([(8, 128, 64, 64), (8, 64, 128, 128)], 2.5)),
    _bench("dynamic_instance_norm_g4_3x3", "dynamic_instance_norm grouped 3x3 (groups = 4), Co = C, padding 1",
           False, 4, 3, [(8, 128, 64, 64), (1, 32, 1024, 1024)],
           # issue 18: the same 1.5x at the model shape too, on AVX2 CPUs as on AVX-512 ones
           _issue4([(8, 128, 64, 64)], 1.5) + _speedups([(1, 32, 1024, 1024)], 1.5, "issue 18")),
]


def run(quick: bool = False, dtype: torch.dtype = torch.float32) -> list[dict]:
    """These ops' tables (target shapes, or tiny ones with quick) and their rows."""
    from .runner import run_module

    return run_module(BENCHES, quick, dtype)
