"""instance_norm against torch.nn.functional.instance_norm and a plain copy of the same bytes.

Providers, all in the same run:
  din_ops : din_ops.instance_norm (the compiled kernels)
  torch   : torch.nn.functional.instance_norm
  copy    : x.clone(), reading x and writing y once: the floor for forward
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

import din_ops

from .common import Table, compare, forward_backward, mib, ms, ratio, saved_bytes

SHAPES = [(8, 64, 128, 128), (8, 128, 64, 64), (4, 256, 32, 32)]
QUICK_SHAPES = [(2, 16, 16, 16)]


def run(quick: bool = False, dtype: torch.dtype = torch.float32) -> list[dict]:
    results = []
    print(f"\ninstance_norm, {dtype}: time in ms (median); vs torch = torch / din_ops, vs copy = din_ops / copy")
    table = Table(["N,C,H,W", "pass", "din_ops", "torch", "copy", "vs torch", "vs copy", "saved MiB", "torch MiB"])
    table.header()
    for shape in QUICK_SHAPES if quick else SHAPES:
        torch.manual_seed(0)
        x = torch.randn(*shape, dtype=dtype)
        t = compare({
            "ours": lambda: din_ops.instance_norm(x),
            "torch": lambda: F.instance_norm(x),
            "copy": lambda: x.clone(),
        })
        t_ours, t_torch, t_copy = t["ours"][0], t["torch"][0], t["copy"][0]
        name = ",".join(map(str, shape))
        table.row([name, "fwd", ms(t_ours), ms(t_torch), ms(t_copy), ratio(t_torch, t_ours), ratio(t_ours, t_copy), "", ""])
        tb = compare({
            "ours": forward_backward(din_ops.instance_norm, [x]),
            "torch": forward_backward(F.instance_norm, [x]),
        })
        tb_ours, tb_torch = tb["ours"][0], tb["torch"][0]
        s_ours = saved_bytes(din_ops.instance_norm, [x])
        s_torch = saved_bytes(F.instance_norm, [x])
        table.row([name, "fwd+bwd", ms(tb_ours), ms(tb_torch), "", ratio(tb_torch, tb_ours), "", mib(s_ours), mib(s_torch)])
        results.append(dict(op="instance_norm", shape=list(shape), dtype=str(dtype),
                            fwd_ms=t_ours * 1e3, fwd_torch_ms=t_torch * 1e3, copy_ms=t_copy * 1e3,
                            fwdbwd_ms=tb_ours * 1e3, fwdbwd_torch_ms=tb_torch * 1e3,
                            saved_bytes=s_ours, saved_bytes_torch=s_torch))
    return results
