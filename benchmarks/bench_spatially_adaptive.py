"""spatially_adaptive_instance_norm (y = gamma * IN(x) + beta) against plain PyTorch and an
elementwise floor.

Providers, all in the same run:
  din_ops backends : din_ops.spatially_adaptive_instance_norm for every available backend
  torch            : gamma * F.instance_norm(x) + beta in plain PyTorch (the way SPADE/AdaIN layers
                     are written)
  addcmul (floor)  : forward: torch.addcmul(beta, x, gamma), one elementwise op that reads x, gamma
                     and beta and writes y once, with no statistics at all. forward+backward: that op
                     plus the bare elementwise ops of a backward, run without autograd: gy * gamma and
                     gy * x (full gamma) or gy * gamma, vecdot(gy, x) over each plane and sum(gy)
                     (per-plane gamma), and for a full beta the copy of gy that autograd makes into
                     beta.grad for every provider here. These are separate passes, so the fused
                     backward, which reads gy, x and gamma once for both gradients, can run below
                     this floor.

gamma/beta "full" is (N, C, H, W) (SPADE), "plane" is (N, C, 1, 1) (AdaIN).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

import din_ops

from .registry import Floor, OpBench, Target, Work

SHAPES = [(8, 128, 64, 64)]
FORMS = ["full", "plane"]


def torch_way(x, gamma, beta):
    """gamma * IN(x) + beta with F.instance_norm."""
    return gamma * F.instance_norm(x) + beta


def _floor_fwd(x, gamma, beta):
    return lambda: torch.addcmul(beta, x, gamma)


def _floor_fwdbwd(x, gamma, beta, gy):
    full = gamma.shape == x.shape

    def run():
        torch.addcmul(beta, x, gamma)
        gy * gamma
        if full:
            gy * x
            gy.clone()
        else:
            torch.linalg.vecdot(gy.flatten(2), x.flatten(2))
            gy.sum(dim=(2, 3))

    return run


def _bench(form: str) -> OpBench:
    def inputs(shape, dtype, device):
        n, c = shape[:2]
        mod_shape = shape if form == "full" else (n, c, 1, 1)
        x = torch.randn(*shape, dtype=dtype, device=device)
        gamma = 1 + 0.1 * torch.randn(*mod_shape, dtype=dtype, device=device)
        beta = torch.randn(*mod_shape, dtype=dtype, device=device)
        return [x, gamma, beta]

    def work(shape, itemsize):
        n, c, h, w = shape
        size = n * c * h * w * itemsize
        if form == "full":
            # forward: read x, gamma, beta, write y; backward: read gy, x, gamma, write gx, ggamma, gbeta.
            return Work(fwd_bytes=4 * size, fwdbwd_bytes=10 * size)
        return Work(fwd_bytes=2 * size, fwdbwd_bytes=5 * size)

    return OpBench(
        name=f"spatially_adaptive_{form}",
        title=f"spatially_adaptive_instance_norm, gamma/beta {'(N, C, H, W)' if form == 'full' else '(N, C, 1, 1)'}",
        inputs=inputs,
        din=lambda backend: lambda x, g, b: din_ops.spatially_adaptive_instance_norm(x, g, b, backend=backend),
        pytorch=torch_way,
        floor=Floor("addcmul", fwd=_floor_fwd, fwdbwd=_floor_fwdbwd,
                    doc="torch.addcmul(beta, x, gamma) (forward), plus the bare elementwise ops of a backward"),
        work=work,
        unit="GB/s",
        targets=SHAPES,
        checks=[
            Target((8, 128, 64, 64), "fwd", "cpu", "speedup", 2.0, "issue 4"),
            Target((8, 128, 64, 64), "fwd+bwd", "cpu", "speedup", 2.0, "issue 4"),
            Target((8, 128, 64, 64), "fwd", "cpu", "over_floor", 1.5, "issue 4"),
            Target(None, "fwd", "cuda", "over_floor", 1.3, "issue 9"),
        ],
    )


BENCHES = [_bench(form) for form in FORMS]


def run(quick: bool = False, dtype: torch.dtype = torch.float32) -> list[dict]:
    """These ops' tables (target shapes, or tiny ones with quick) and their rows."""
    from .runner import run_module

    return run_module(BENCHES, quick, dtype)
