"""dynamic_instance_norm (1x1) against the way PyTorch users write it today and the bare GEMM.

Providers, all in the same run:
  din_ops : din_ops.dynamic_instance_norm (the compiled kernels)
  torch   : F.instance_norm, then F.conv2d with the batch folded into the groups
  bmm     : torch.bmm of the same shapes, the floor (no normalization at all): for forward the
            product W @ x, for forward+backward the three products W @ x, gy @ x^T and W^T @ gy
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

import din_ops

from .common import Table, compare, forward_backward, mib, ms, ratio, saved_bytes

SHAPES = [(8, 64, 128, 128), (8, 128, 64, 64), (4, 256, 32, 32)]
QUICK_SHAPES = [(2, 16, 16, 16)]


def torch_way(x, w, b):
    n, c, h, wd = x.shape
    co = w.shape[1]
    xh = F.instance_norm(x)
    y = F.conv2d(xh.reshape(1, n * c, h, wd), w.reshape(n * co, c, 1, 1), b.reshape(-1), groups=n)
    return y.reshape(n, co, h, wd)


def run(quick: bool = False, dtype: torch.dtype = torch.float32) -> list[dict]:
    results = []
    print(f"\ndynamic_instance_norm 1x1, {dtype}, Co = C: time in ms (median); vs torch = torch / din_ops,"
          " vs bmm = din_ops / bmm")
    table = Table(["N,C,H,W", "pass", "din_ops", "torch", "bmm", "vs torch", "vs bmm", "saved MiB", "torch MiB"])
    table.header()
    for n, c, h, w in QUICK_SHAPES if quick else SHAPES:
        torch.manual_seed(0)
        x = torch.randn(n, c, h, w, dtype=dtype)
        wt = torch.randn(n, c, c, dtype=dtype) / c**0.5
        b = torch.randn(n, c, dtype=dtype)
        xv = x.view(n, c, h * w)
        t = compare({
            "ours": lambda: din_ops.dynamic_instance_norm(x, wt, b),
            "torch": lambda: torch_way(x, wt, b),
            "bmm": lambda: torch.bmm(wt, xv),
        })
        t_ours, t_torch, t_bmm = t["ours"][0], t["torch"][0], t["bmm"][0]
        shape = f"{n},{c},{h},{w}"
        table.row([shape, "fwd", ms(t_ours), ms(t_torch), ms(t_bmm), ratio(t_torch, t_ours), ratio(t_ours, t_bmm), "", ""])
        gy = torch.randn_like(xv)
        wT = wt.transpose(1, 2).contiguous()
        xT = xv.transpose(1, 2)
        tb = compare({
            "ours": forward_backward(din_ops.dynamic_instance_norm, [x, wt, b]),
            "torch": forward_backward(torch_way, [x, wt, b]),
            # The three products of forward + backward (y, grad_weight, grad_x), nothing else.
            "bmm": lambda: (torch.bmm(wt, xv), torch.bmm(gy, xT), torch.bmm(wT, gy)),
        })
        tb_ours, tb_torch, tb_bmm = tb["ours"][0], tb["torch"][0], tb["bmm"][0]
        s_ours = saved_bytes(din_ops.dynamic_instance_norm, [x, wt, b])
        s_torch = saved_bytes(torch_way, [x, wt, b])
        table.row([shape, "fwd+bwd", ms(tb_ours), ms(tb_torch), ms(tb_bmm), ratio(tb_torch, tb_ours), ratio(tb_ours, tb_bmm), mib(s_ours), mib(s_torch)])
        results.append(dict(op="dynamic_instance_norm", shape=[n, c, h, w], dtype=str(dtype),
                            fwd_ms=t_ours * 1e3, fwd_torch_ms=t_torch * 1e3, bmm_ms=t_bmm * 1e3,
                            fwdbwd_ms=tb_ours * 1e3, fwdbwd_torch_ms=tb_torch * 1e3, fwdbwd_bmm_ms=tb_bmm * 1e3,
                            saved_bytes=s_ours, saved_bytes_torch=s_torch))
    return results
