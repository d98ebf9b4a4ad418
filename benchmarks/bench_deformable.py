"""Deformable dynamic instance norm (DCNv2: offsets and mask) against PyTorch implementations.

Providers, all in the same run (float32, 3x3 kernel, padding 1, one offset group, Co = C):
  din_ops    : din_ops.dynamic_instance_norm(x, w, b, offset=..., mask=...)
  reference  : din_ops.reference.deformable_instance_norm (the definition: gathers of the four
               corners over the whole batch, then a batched matrix product)
  grid_sample: F.instance_norm, one F.grid_sample of every tap (align_corners=True, zero padding),
               then a batched matrix product: what a PyTorch user might write without torchvision

"peak MiB" is the peak of the memory allocated during one call (forward, or forward and backward),
over what existed before it, as the PyTorch profiler records allocations: it includes the outputs
(and gradients), and for din_ops the kernel's workspace, which the kernel allocates as tensors.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

import din_ops
from din_ops import reference

from .common import Table, compare, forward_backward, mib, ms, ratio

# (N, C, H, W)
CASES = [(4, 64, 64, 64), (2, 128, 64, 64)]
QUICK_CASES = [(2, 16, 16, 16)]


def ours(x, w, b, offset, mask):
    return din_ops.dynamic_instance_norm(x, w, b, offset=offset, mask=mask, padding=1)


def ref(x, w, b, offset, mask):
    return reference.deformable_instance_norm(x, w, b, offset, mask, padding=1)


def grid_sample_way(x, w, b, offset, mask):
    """3x3, padding 1, stride 1, one offset group, groups 1."""
    n, c, h, wd = x.shape
    xh = F.instance_norm(x)
    ho, wo = offset.shape[2], offset.shape[3]
    taps = torch.arange(9, device=x.device)
    off = offset.reshape(n, 9, 2, ho, wo)
    py = (torch.arange(ho, device=x.device) - 1)[None, :, None] + (taps // 3)[:, None, None] + off[:, :, 0]
    px = (torch.arange(wo, device=x.device) - 1)[None, None, :] + (taps % 3)[:, None, None] + off[:, :, 1]
    grid = torch.stack([2 * px / (wd - 1) - 1, 2 * py / (h - 1) - 1], dim=-1).reshape(n, 9 * ho, wo, 2)
    samples = F.grid_sample(xh, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    cols = (samples.reshape(n, c, 9, ho * wo) * mask.reshape(n, 1, 9, ho * wo)).reshape(n, c * 9, ho * wo)
    y = w.reshape(n, w.shape[1], c * 9) @ cols + b[:, :, None]
    return y.reshape(n, -1, ho, wo)


def peak_bytes(fn) -> int:
    """Peak of the bytes allocated while fn() runs, over what was allocated before it (profiler)."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    with torch.profiler.profile(activities=activities, profile_memory=True) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events.sort(key=lambda e: e.start_ns())
    live = peak = 0
    for e in events:
        live += e.nbytes()
        peak = max(peak, live)
    return peak


def run(quick: bool = False, dtype: torch.dtype = torch.float32) -> list[dict]:
    results = []
    print(
        f"\ndeformable dynamic_instance_norm 3x3 (offsets + mask, 1 offset group, padding 1), {dtype}, "
        "Co = C: time in ms (median); vs = provider / din_ops; peak MiB = extra memory of one call"
    )
    table = Table(["N,C,H,W", "pass", "din_ops", "reference", "vs ref", "grid_sample", "vs gs",
                   "din_ops MiB", "ref MiB", "gs MiB"])
    table.header()
    for n, c, h, w in QUICK_CASES if quick else CASES:
        torch.manual_seed(0)
        x = torch.randn(n, c, h, w, dtype=dtype)
        wt = torch.randn(n, c, c, 3, 3, dtype=dtype) / (3 * c**0.5)
        b = torch.randn(n, c, dtype=dtype)
        offset = 2 * torch.randn(n, 18, h, w, dtype=dtype)
        mask = torch.rand(n, 9, h, w, dtype=dtype)
        inputs = [x, wt, b, offset, mask]
        expected = ref(*inputs)
        for fn in (ours, grid_sample_way):  # every provider computes the same thing
            err = (fn(*inputs) - expected).abs().max().item()
            assert err < 1e-3 * max(1.0, expected.abs().max().item()), (fn.__name__, err)
        del expected
        shape = f"{n},{c},{h},{w}"
        providers = {"ours": ours, "ref": ref, "gs": grid_sample_way}
        reps = dict(min_time=0.0, min_reps=3)  # the reference takes seconds per call
        t = compare({k: (lambda f=f, a=inputs: f(*a)) for k, f in providers.items()}, **reps)
        mem = {k: peak_bytes(lambda f=f, a=inputs: f(*a)) for k, f in providers.items()}
        table.row([shape, "fwd", ms(t["ours"][0]), ms(t["ref"][0]), ratio(t["ref"][0], t["ours"][0]),
                   ms(t["gs"][0]), ratio(t["gs"][0], t["ours"][0]), mib(mem["ours"]), mib(mem["ref"]), mib(mem["gs"])])
        fb = compare({k: forward_backward(f, inputs) for k, f in providers.items()}, **reps)
        mem_fb = {k: peak_bytes(forward_backward(f, inputs)) for k, f in providers.items()}
        table.row([shape, "fwd+bwd", ms(fb["ours"][0]), ms(fb["ref"][0]), ratio(fb["ref"][0], fb["ours"][0]),
                   ms(fb["gs"][0]), ratio(fb["gs"][0], fb["ours"][0]), mib(mem_fb["ours"]), mib(mem_fb["ref"]),
                   mib(mem_fb["gs"])])
        results.append(dict(
            op="deformable dynamic_instance_norm 3x3", shape=[n, c, h, w], dtype=str(dtype),
            fwd_ms=t["ours"][0] * 1e3, fwd_reference_ms=t["ref"][0] * 1e3, fwd_grid_sample_ms=t["gs"][0] * 1e3,
            fwdbwd_ms=fb["ours"][0] * 1e3, fwdbwd_reference_ms=fb["ref"][0] * 1e3,
            fwdbwd_grid_sample_ms=fb["gs"][0] * 1e3,
            peak_bytes_fwd=mem["ours"], peak_bytes_fwd_reference=mem["ref"], peak_bytes_fwd_grid_sample=mem["gs"],
            peak_bytes_fwdbwd=mem_fb["ours"], peak_bytes_fwdbwd_reference=mem_fb["ref"],
            peak_bytes_fwdbwd_grid_sample=mem_fb["gs"],
        ))
    return results


if __name__ == "__main__":
    run()
