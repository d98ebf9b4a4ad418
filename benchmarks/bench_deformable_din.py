"""Deformable DIN (3x3, one offset group, DCNv1 offsets) beside the reference and, on a GPU with
torchvision installed, torchvision.ops.deform_conv2d.

Providers, all in the same run:
  din_ops backends : din_ops.dynamic_instance_norm(x, w, b, offset=..., padding=1) on every backend
  torch            : din_ops.reference's deformable DIN (PyTorch has no deformable convolution of
                     its own; the reference is written from the definition in plain PyTorch)
  grid_sample      : F.instance_norm, one F.grid_sample of every tap (align_corners=True, zero
                     padding), then a batched matrix product: what a PyTorch user might write
                     without torchvision
  torchvision      : (GPU, torchvision installed) deform_conv2d on F.instance_norm(x) with the batch
                     folded into the groups, so each sample gets its own weights and offsets
  copy (floor)     : x.clone() (forward) and x.clone(), torch.add(x, gy) (forward+backward)
"""
from __future__ import annotations


import torch
import torch.nn.functional as F

import din_ops
from din_ops import reference

from .registry import Extra, Floor, OpBench, Target, Work

K = 3
SHAPES = [(4, 64, 64, 64), (2, 128, 64, 64)]


def _inputs(shape, dtype, device):
    n, c, h, w = shape
    x = torch.randn(n, c, h, w, dtype=dtype, device=device)
    weight = torch.randn(n, c, c, K, K, dtype=dtype, device=device) / (K * c**0.5)
    bias = torch.randn(n, c, dtype=dtype, device=device)
    # One offset group: (dy, dx) per tap and output pixel, about a pixel or two, fractional.
    offset = 1.5 * torch.randn(n, 2 * K * K, h, w, dtype=dtype, device=device)
    return [x, weight, bias, offset]


def _work(shape, itemsize):
    n, c, h, w = shape
    flops = 2.0 * n * c * c * K * K * h * w
    size = n * c * h * w * itemsize
    return Work(fwd_bytes=2 * size, fwdbwd_bytes=5 * size, fwd_flops=flops, fwdbwd_flops=3 * flops)


def torchvision_deform(x, weight, bias, offset, mask=None):
    """IN, then torchvision's deform_conv2d with the batch folded into the groups: sample n's
    channels, weights and offsets become groups n of one call (stride 1, padding k // 2)."""
    from torchvision.ops import deform_conv2d

    n, c, h, w = x.shape
    co, kh, kw = weight.shape[1], weight.shape[-2], weight.shape[-1]
    folded = F.instance_norm(x).reshape(1, n * c, h, w)
    y = deform_conv2d(
        folded,
        offset.reshape(1, -1, *offset.shape[2:]),
        weight.reshape(n * co, *weight.shape[2:]),
        None if bias is None else bias.reshape(-1),
        padding=(kh // 2, kw // 2),
        mask=None if mask is None else mask.reshape(1, -1, *mask.shape[2:]),
    )
    return y.reshape(n, co, *y.shape[2:])


def grid_sample_way(x, weight, bias, offset):
    """IN, then the K x K taps sampled with F.grid_sample at the offset positions (pixel centres at
    align_corners=True coordinates, zeros outside), then one batched matrix product."""
    n, c, h, w = x.shape
    ho, wo = offset.shape[2], offset.shape[3]
    taps = torch.arange(K * K, device=x.device)
    off = offset.reshape(n, K * K, 2, ho, wo)
    rows = (torch.arange(ho, device=x.device) - K // 2)[None, :, None] + (taps // K)[:, None, None]
    cols = (torch.arange(wo, device=x.device) - K // 2)[None, None, :] + (taps % K)[:, None, None]
    py, px = rows + off[:, :, 0], cols + off[:, :, 1]
    grid = torch.stack([2 * px / (w - 1) - 1, 2 * py / (h - 1) - 1], dim=-1).reshape(n, K * K * ho, wo, 2)
    samples = F.grid_sample(F.instance_norm(x), grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    y = weight.reshape(n, weight.shape[1], c * K * K) @ samples.reshape(n, c * K * K, ho * wo)
    return (y + bias[:, :, None]).reshape(n, -1, ho, wo)


def torchvision_deform_missing(device, dtype: torch.dtype) -> str:
    """Why torchvision's deform_conv2d cannot be timed in dtype on device ("" where it can): torchvision
    is not importable, or has no kernel for the dtype (torchvision 0.29 has none for bfloat16 on the
    CPU). A tiny call tells."""
    try:
        from torchvision.ops import deform_conv2d
    except Exception as error:  # ImportError, or RuntimeError from a build for another torch
        return f"torchvision is not importable ({type(error).__name__}: {error})"
    x = torch.zeros(1, 1, 2, 2, device=device, dtype=dtype)
    try:
        deform_conv2d(x, torch.zeros(1, 2, 2, 2, device=device, dtype=dtype),
                      torch.ones(1, 1, 1, 1, device=device, dtype=dtype))
    except RuntimeError as error:
        return f"torchvision's deform_conv2d does not run in {str(dtype)[6:]} here ({error})"
    return ""


def _torchvision_available(device: torch.device, dtype: torch.dtype) -> bool:
    return device.type == "cuda" and not torchvision_deform_missing(device, dtype)


BENCHES = [
    OpBench(
        name="dynamic_instance_norm_deform3x3",
        title="deformable dynamic_instance_norm 3x3, one offset group, Co = C, padding 1",
        inputs=_inputs,
        din=lambda backend: lambda x, w, b, off: din_ops.dynamic_instance_norm(
            x, w, b, offset=off, padding=K // 2, backend=backend),
        pytorch=lambda x, w, b, off: reference.deformable_instance_norm(x, w, b, off, None, padding=K // 2),
        floor=Floor("copy", fwd=lambda x, w, b, off: lambda: x.clone(),
                    fwdbwd=lambda x, w, b, off, gy: lambda: (x.clone(), torch.add(x, gy)),
                    doc="x.clone() (forward); x.clone() and torch.add(x, gy) (forward+backward)"),
        work=_work,
        unit="GFLOP/s",
        targets=SHAPES,
        checks=[Target(s, p, "cpu", "speedup", 3.0, "issue 5") for s in SHAPES for p in ("fwd", "fwd+bwd")]
        + [Target(None, "fwd+bwd", "cuda", "speedup", 3.0, "issue 9", versus="torchvision")],
        extras=[Extra("grid_sample", lambda device, dtype: True, grid_sample_way),
                Extra("torchvision", _torchvision_available, torchvision_deform)],
        backends=("cpu", "cuda", "reference"),  # no Triton kernel
        # The reference and grid_sample compositions materialize C * 9 samples per pixel (2.4 GiB
        # for (1, 32, 1024, 1024)) and take seconds to minutes per call beyond the target shapes'
        # 2^20 values: larger shapes are left out.
        accepts=lambda shape: shape[0] * shape[1] * shape[2] * shape[3] <= 2**20,
    )
]
