"""instance_norm against torch.nn.functional.instance_norm and a copy of the same bytes.

Providers, all in the same run:
  din_ops backends : din_ops.instance_norm(x, backend=...) for every available backend
  torch            : torch.nn.functional.instance_norm
  copy (floor)     : forward x.clone() (read x, write y once); forward+backward adds torch.add(x, gy)
                     (read x and gy, write one tensor): the five tensor passes that any instance norm
                     with its backward must make

instance_norm_channels_last is the same table for a channels_last x (as in the model, whose
convolutions run channels_last): every provider, the floor included, gets and returns channels_last
tensors.
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

import din_ops

from .registry import Floor, OpBench, Target, Work

SHAPES = [(8, 64, 128, 128), (8, 128, 64, 64), (4, 256, 32, 32)]


def _inputs(shape, dtype, device):
    return [torch.randn(*shape, dtype=dtype, device=device)]


def _inputs_channels_last(shape, dtype, device):
    return [t.contiguous(memory_format=torch.channels_last) for t in _inputs(shape, dtype, device)]


def _work(shape, itemsize):
    n, c, h, w = shape
    size = n * c * h * w * itemsize
    # forward: read x, write y; backward: read x and gy, write gx.
    return Work(fwd_bytes=2 * size, fwdbwd_bytes=5 * size)


INSTANCE_NORM = OpBench(
    name="instance_norm",
    title="instance_norm (no affine parameters)",
    inputs=_inputs,
    din=lambda backend: lambda x: din_ops.instance_norm(x, backend=backend),
    pytorch=F.instance_norm,
    floor=Floor(
        "copy",
        fwd=lambda x: lambda: x.clone(),
        fwdbwd=lambda x, gy: lambda: (x.clone(), torch.add(x, gy)),
        doc="x.clone() (forward); x.clone() and torch.add(x, gy) (forward+backward): the same bytes",
    ),
    work=_work,
    unit="GB/s",
    targets=SHAPES,
    gpu_targets=[(16, 256, 128, 128)],
    checks=[
        Target((16, 256, 128, 128), "fwd", "cuda", "over_floor", 1 / 0.8, "issue 9"),
        Target((16, 256, 128, 128), "fwd", "triton", "over_floor", 1 / 0.75, "issue 10"),
    ],
)

BENCHES = [
    INSTANCE_NORM,
    dataclasses.replace(INSTANCE_NORM, name="instance_norm_channels_last",
                        title="instance_norm (no affine parameters), channels_last x",
                        inputs=_inputs_channels_last, gpu_targets=[], checks=[]),
]


def run(quick: bool = False, dtype: torch.dtype = torch.float32) -> list[dict]:
    """This op's table (target shapes, or tiny ones with quick) and its rows, as ``python -m
    benchmarks --ops instance_norm`` would print them."""
    from .runner import run_module

    return run_module(BENCHES, quick, dtype)
