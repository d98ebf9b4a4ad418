"""spatially_adaptive_instance_norm (y = gamma * IN(x) + beta) against plain PyTorch and an
elementwise floor.

Providers, all in the same run:
  din_ops : din_ops.spatially_adaptive_instance_norm (the compiled kernels)
  torch   : din_ops.reference.spatially_adaptive_instance_norm, i.e. gamma * IN(x) + beta in plain
            PyTorch (the way SPADE/AdaIN layers are written)
  floor   : forward: torch.addcmul(beta, x, gamma), one elementwise op that reads x, gamma and beta
            and writes y once, with no statistics at all. forward+backward: that op plus the bare
            elementwise ops of a backward, run without autograd: gy * gamma and gy * x (full gamma)
            or gy * gamma, vecdot(gy, x) over each plane and sum(gy) (per-plane gamma), and for a
            full beta the copy of gy that autograd makes into beta.grad for every provider here.
            (addcmul's own autograd backward is slower: it also materializes gamma * 1.) These are
            separate passes, so the fused backward, which reads gy, x and gamma once for both
            gradients, can run below this floor.

gamma/beta "full" is (N, C, H, W) (SPADE), "plane" is (N, C, 1, 1) (AdaIN).
"""
from __future__ import annotations

import torch

import din_ops
from din_ops import reference

from .common import Table, compare, forward_backward, mib, ms, ratio, saved_bytes

SHAPES = [(8, 128, 64, 64)]
QUICK_SHAPES = [(2, 16, 16, 16)]
FORMS = ["full", "plane"]


def run(quick: bool = False, dtype: torch.dtype = torch.float32) -> list[dict]:
    results = []
    print(f"\nspatially_adaptive_instance_norm, {dtype}: time in ms (median); vs torch = torch / din_ops,"
          " vs floor = din_ops / floor (elementwise ops only)")
    table = Table(["N,C,H,W", "gamma", "pass", "din_ops", "torch", "floor", "vs torch", "vs floor",
                   "saved MiB", "torch MiB"])
    table.header()
    for shape in QUICK_SHAPES if quick else SHAPES:
        n, c = shape[:2]
        name = ",".join(map(str, shape))
        for form in FORMS:
            torch.manual_seed(0)
            x = torch.randn(*shape, dtype=dtype)
            mod_shape = shape if form == "full" else (n, c, 1, 1)
            gamma = 1 + 0.1 * torch.randn(*mod_shape, dtype=dtype)
            beta = torch.randn(*mod_shape, dtype=dtype)
            ours = din_ops.spatially_adaptive_instance_norm
            plain = reference.spatially_adaptive_instance_norm

            def floor(x, gamma, beta):
                return torch.addcmul(beta, x, gamma)

            gy = torch.randn_like(x)

            def floor_fwd_bwd():
                torch.addcmul(beta, x, gamma)
                gy * gamma
                if form == "full":
                    gy * x
                    gy.clone()
                else:
                    torch.linalg.vecdot(gy.flatten(2), x.flatten(2))
                    gy.sum(dim=(2, 3))

            t = compare({
                "ours": lambda: ours(x, gamma, beta),
                "torch": lambda: plain(x, gamma, beta),
                "floor": lambda: floor(x, gamma, beta),
            })
            t_ours, t_torch, t_floor = t["ours"][0], t["torch"][0], t["floor"][0]
            table.row([name, form, "fwd", ms(t_ours), ms(t_torch), ms(t_floor), ratio(t_torch, t_ours),
                       ratio(t_ours, t_floor), "", ""])
            args = [x, gamma, beta]
            tb = compare({
                "ours": forward_backward(ours, args),
                "torch": forward_backward(plain, args),
                "floor": floor_fwd_bwd,
            })
            tb_ours, tb_torch, tb_floor = tb["ours"][0], tb["torch"][0], tb["floor"][0]
            s_ours, s_torch = saved_bytes(ours, args), saved_bytes(plain, args)
            table.row([name, form, "fwd+bwd", ms(tb_ours), ms(tb_torch), ms(tb_floor), ratio(tb_torch, tb_ours),
                       ratio(tb_ours, tb_floor), mib(s_ours), mib(s_torch)])
            results.append(dict(op="spatially_adaptive_instance_norm", shape=list(shape), gamma=form,
                                dtype=str(dtype), fwd_ms=t_ours * 1e3, fwd_torch_ms=t_torch * 1e3,
                                fwd_floor_ms=t_floor * 1e3, fwdbwd_ms=tb_ours * 1e3,
                                fwdbwd_torch_ms=tb_torch * 1e3, fwdbwd_floor_ms=tb_floor * 1e3,
                                saved_bytes=s_ours, saved_bytes_torch=s_torch))
    return results


if __name__ == "__main__":
    import sys

    from .common import machine, steady_allocations

    steady_allocations()
    print(machine())
    run("--quick" in sys.argv)
