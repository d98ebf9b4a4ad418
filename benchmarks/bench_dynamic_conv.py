"""k x k dynamic instance norm (depthwise and grouped) against the PyTorch composition.

Providers, all in the same run:
  din_ops : din_ops.dynamic_instance_norm with a k x k kernel
  torch   : F.instance_norm, then F.conv2d with the batch folded into the groups
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

import din_ops
from din_ops import reference

from .common import Table, compare, forward_backward, mib, ms, ratio, saved_bytes

# (label, (N, C, H, W), groups, kernel)
CASES = [
    ("depthwise 3x3", (8, 128, 64, 64), 128, 3),
    ("depthwise 3x3", (8, 64, 128, 128), 64, 3),
    ("grouped 3x3 g=4", (8, 128, 64, 64), 4, 3),
]
QUICK_CASES = [("depthwise 3x3", (2, 16, 16, 16), 16, 3), ("grouped 3x3 g=4", (2, 16, 16, 16), 4, 3)]


def torch_way(x, w, b, groups):
    return reference.dynamic_conv2d(F.instance_norm(x), w, b, padding=1, groups=groups)


def ours(x, w, b, groups):
    return din_ops.dynamic_instance_norm(x, w, b, padding=1, groups=groups)


def run(quick: bool = False, dtype: torch.dtype = torch.float32) -> list[dict]:
    results = []
    print(f"\ndynamic_instance_norm k x k (padding 1), {dtype}, Co = C: time in ms (median); vs torch = torch / din_ops")
    table = Table(["op", "N,C,H,W", "pass", "din_ops", "torch", "vs torch", "saved MiB", "torch MiB"])
    table.header()
    for label, (n, c, h, w), groups, k in QUICK_CASES if quick else CASES:
        torch.manual_seed(0)
        x = torch.randn(n, c, h, w, dtype=dtype)
        wt = torch.randn(n, c, c // groups, k, k, dtype=dtype) / (k * (c // groups) ** 0.5)
        b = torch.randn(n, c, dtype=dtype)
        shape = f"{n},{c},{h},{w}"
        t = compare({"ours": lambda: ours(x, wt, b, groups), "torch": lambda: torch_way(x, wt, b, groups)})
        table.row([label, shape, "fwd", ms(t["ours"][0]), ms(t["torch"][0]), ratio(t["torch"][0], t["ours"][0]), "", ""])
        fb = compare({
            "ours": forward_backward(lambda x, w, b: ours(x, w, b, groups), [x, wt, b]),
            "torch": forward_backward(lambda x, w, b: torch_way(x, w, b, groups), [x, wt, b]),
        })
        s_ours = saved_bytes(lambda x, w, b: ours(x, w, b, groups), [x, wt, b])
        s_torch = saved_bytes(lambda x, w, b: torch_way(x, w, b, groups), [x, wt, b])
        table.row([label, shape, "fwd+bwd", ms(fb["ours"][0]), ms(fb["torch"][0]), ratio(fb["torch"][0], fb["ours"][0]), mib(s_ours), mib(s_torch)])
        results.append(dict(op=f"dynamic_instance_norm {label}", shape=[n, c, h, w], dtype=str(dtype),
                            fwd_ms=t["ours"][0] * 1e3, fwd_torch_ms=t["torch"][0] * 1e3,
                            fwdbwd_ms=fb["ours"][0] * 1e3, fwdbwd_torch_ms=fb["torch"][0] * 1e3,
                            saved_bytes=s_ours, saved_bytes_torch=s_torch))
    return results
