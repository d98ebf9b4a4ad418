"""The paper's DIN style-transfer network (din_ops.models.DINStyleNet) at inference.

Providers, all in the same run, the same module and weights:
  din_ops   : every DIN and instance-norm layer on the din_ops kernels (backend=None)
  reference : the same model with backend="reference" (the plain-PyTorch formulas of din_ops.reference:
              F.instance_norm-style mean/var arithmetic and the dynamic convolution as one grouped
              F.conv2d, the way such models are written today)

Both run in inference mode with channels_last tensors (the convolutions, the same for both, are
PyTorch's oneDNN ones). Rows:
  content : the content path with the style codes computed beforehand (encoder, DIN layers,
            decoder): the paper's deployed case, "the style-specific parameters for known styles can
            be stored in advance"
  full    : style encoding (VGG-19 to relu4_1 on the style image, weight and bias nets) + content path
GMAC/s divides the nominal multiply-accumulates (FlopCounterMode / 2, see din_ops.models.macs_breakdown)
by the din_ops time. With --quick the images are tiny (a smoke test, not a measurement).
"""
from __future__ import annotations

import torch

from din_ops.models import DINStyleNet
from din_ops.models.din_style_net import paper_macs

from .common import Table, compare, ms, ratio

# (content size, style size)
SIZES = [(512, 256), (1024, 256)]
QUICK_SIZES = [(64, 32)]


# Kineto, the profiler's C++ side, logs "USDT: ... profiler_start" / "profiler_stop" lines to stderr
# at every profile, in the middle of the table; KINETO_LOG_LEVEL=6 silences them (torch 2.13;
# errors still raise). Kineto reads the variable once per process, at its first profile; a level
# the user set is kept.
QUIET_KINETO = "6"


def _profile_top(fn, rows: int = 8) -> list[tuple[str, float]]:
    """The ops taking the most time in one call of fn: (name, share of the total)."""
    import os

    from torch.profiler import profile

    os.environ.setdefault("KINETO_LOG_LEVEL", QUIET_KINETO)
    with profile() as prof:
        fn()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    return [(e.key, e.self_cpu_time_total / total) for e in events[:rows]]


def run(quick: bool = False) -> list[dict]:
    results = []
    print("\nDINStyleNet inference (float32, channels_last, inference mode, batch 1): time per image in ms "
          "(median); vs reference = reference / din_ops")
    table = Table(["content", "style", "path", "din_ops", "reference", "vs ref", "GMAC", "GMAC/s"])
    table.header()
    torch.manual_seed(0)
    model = DINStyleNet().eval().to(memory_format=torch.channels_last)
    cl = torch.channels_last
    profile_rows = None
    for size, style_size in QUICK_SIZES if quick else SIZES:
        macs = paper_macs(size, style_size)
        content_macs = macs["encoder"] + macs["din"] + macs["decoder"]
        content = torch.rand(1, 3, size, size).contiguous(memory_format=cl)
        style = torch.rand(1, 3, style_size, style_size).contiguous(memory_format=cl)
        with torch.inference_mode():
            codes = model.encode_style(style)

            def on(backend, fn):
                def call():
                    model.set_backend(backend)
                    return fn()
                return call

            def content_path():
                return model.stylize(content, codes)

            def full():
                return model(content, style)

            if quick:
                reps = dict(min_time=0.01, min_reps=2)
            else:
                reps = dict(min_time=0.1, min_reps=3) if size > 512 else dict(min_time=0.5, min_reps=5)
            for path, fn, path_macs in (("content", content_path, content_macs), ("full", full, macs["total"])):
                t = compare({"ours": on(None, fn), "ref": on("reference", fn)}, **reps)
                t_ours, t_ref = t["ours"][0], t["ref"][0]
                rate = path_macs / t_ours / 1e9
                table.row([size, style_size, path, ms(t_ours), ms(t_ref), ratio(t_ref, t_ours),
                           f"{path_macs / 1e9:.2f}", f"{rate:.1f}"])
                results.append(dict(op=f"DINStyleNet {path}", shape=[1, 3, size, size], style=style_size,
                                    dtype="torch.float32", fwd_ms=t_ours * 1e3, fwd_torch_ms=t_ref * 1e3,
                                    gmac=path_macs / 1e9, gmac_per_s=rate))
            if profile_rows is None:
                model.set_backend(None)
                profile_rows = _profile_top(content_path)
    model.set_backend(None)
    print(f"where the din_ops content path spends its time ({QUICK_SIZES[0][0] if quick else SIZES[0][0]}px):")
    for name, share in profile_rows:
        print(f"  {share * 100:5.1f}%  {name}")
    return results


if __name__ == "__main__":
    import sys

    from .common import machine, steady_allocations

    steady_allocations()
    print(machine())
    run("--quick" in sys.argv)
