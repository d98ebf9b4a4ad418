"""GPU benchmarks of the din_ops CUDA kernels beside PyTorch, in one run (skipped without a GPU).

Rows (each in bfloat16 and float32, CUDA-event timing, interleaved rounds, median):
  instance_norm        (16, 256, 128, 128): din_ops vs F.instance_norm vs x.clone() (the copy
                       floor: one read of x and one write of y). Target: >= 80% of copy bandwidth,
                       i.e. "copy / din_ops" >= 0.80.
  DIN 1x1              (16, 256, 128, 128), Co = C: forward vs a bare torch.bmm of the same shapes
                       (target: din_ops / bmm <= 1.3); forward+backward vs the reference (F.instance_norm
                       then the grouped 1x1 conv; target: reference / din_ops >= 2).
  spatially adaptive   (16, 256, 128, 128), full gamma and beta: vs torch.addcmul(beta, x, gamma), the
                       floor for reading x, gamma, beta and writing y (target: din_ops / floor <= 1.3);
                       forward+backward vs the reference.
  depthwise 3x3 DIN    (16, 256, 64, 64): forward and forward+backward vs the reference.
  deformable 3x3 DIN   (8, 64, 64, 64), offsets and mask: forward and forward+backward vs
                       F.instance_norm + torchvision.ops.deform_conv2d with the batch folded into
                       the groups (one call for the per-sample weights; target: forward+backward
                       torchvision / din_ops >= 3). Skipped, with the reason, without torchvision.

The last lines check every target (HOLDS / DOES NOT HOLD).

python -m benchmarks.bench_cuda [--quick] [--dry] [--json PATH]   (installed: python -m din_ops.benchmarks.bench_cuda)
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
from typing import Callable

import torch
import torch.nn.functional as F

import din_ops
from din_ops import reference

from .bench_deformable_din import torchvision_deform_missing
from .bench_dynamic_instance_norm import torch_way as din_1x1_torch_way
from .common import Table, compare, forward_backward, ms, ratio

SHAPE = (16, 256, 128, 128)
DW_SHAPE = (16, 256, 64, 64)
DEFORM_SHAPE = (8, 64, 64, 64)
QUICK_SHAPE = (2, 32, 32, 32)
DTYPES = [torch.bfloat16, torch.float32]
# The device of the rows. Only the tests change it, to "cpu", to run the row code without a GPU.
DEVICE = "cuda"


def available() -> bool:
    return torch.cuda.is_available() and "cuda" in din_ops.available_backends()


def device_line() -> str:
    """The GPU, the software and the date, for the results file."""
    props = torch.cuda.get_device_properties(0)
    return (
        f"{props.name} ({props.multi_processor_count} SMs, {props.total_memory / 2**30:.0f} GiB), "
        f"torch {torch.__version__}, CUDA {torch.version.cuda}, {datetime.date.today().isoformat()}"
    )


def gpu_compare(fns: dict[str, Callable[[], object]], *, rounds: int = 15, inner: int = 5) -> dict[str, float]:
    """Median seconds per call of each function, timed with CUDA events on the current stream.

    The functions run in turn, round after round (each round `inner` back-to-back calls), so clock
    and thermal drift hits all of them alike.
    """
    for fn in fns.values():
        fn()
        fn()
    if DEVICE != "cuda":
        return {name: t for name, (t, _) in compare(fns, min_time=0.0, min_reps=rounds).items()}
    torch.cuda.synchronize()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(inner):
                fn()
            end.record()
            end.synchronize()
            times[name].append(start.elapsed_time(end) / 1e3 / inner)
    return {name: statistics.median(ts) for name, ts in times.items()}


def frac(copy: float, ours: float) -> str:
    return f"{copy / ours:.2f}"


def bench_instance_norm(shape, dtype, table) -> dict:
    x = torch.randn(*shape, device=DEVICE, dtype=dtype)
    t = gpu_compare({
        "ours": lambda: din_ops.instance_norm(x),
        "torch": lambda: F.instance_norm(x),
        "copy": lambda: x.clone(),
    })
    tb = gpu_compare({
        "ours": forward_backward(din_ops.instance_norm, [x]),
        "torch": forward_backward(F.instance_norm, [x]),
    })
    gbs = 2 * x.numel() * x.element_size() / t["ours"] / 1e9
    table.row(["instance_norm", ",".join(map(str, shape)), str(dtype)[6:], "fwd", ms(t["ours"]), ms(t["torch"]),
               ms(t["copy"]), "copy", ratio(t["torch"], t["ours"]), frac(t["copy"], t["ours"]), f"{gbs:.0f}"])
    table.row(["", "", "", "fwd+bwd", ms(tb["ours"]), ms(tb["torch"]), "", "", ratio(tb["torch"], tb["ours"]), "", ""])
    return dict(op="cuda instance_norm", shape=list(shape), dtype=str(dtype), fwd_ms=t["ours"] * 1e3,
                fwd_torch_ms=t["torch"] * 1e3, copy_ms=t["copy"] * 1e3, fwdbwd_ms=tb["ours"] * 1e3,
                fwdbwd_torch_ms=tb["torch"] * 1e3, copy_fraction=t["copy"] / t["ours"])


def bench_din_1x1(shape, dtype, table) -> dict:
    n, c, h, w = shape
    x = torch.randn(n, c, h, w, device=DEVICE, dtype=dtype)
    wt = torch.randn(n, c, c, device=DEVICE, dtype=dtype) / c**0.5
    b = torch.randn(n, c, device=DEVICE, dtype=dtype)
    xv = x.view(n, c, h * w)
    t = gpu_compare({
        "ours": lambda: din_ops.dynamic_instance_norm(x, wt, b),
        "torch": lambda: din_1x1_torch_way(x, wt, b),
        "bmm": lambda: torch.bmm(wt, xv),
    })
    tb = gpu_compare({
        "ours": forward_backward(din_ops.dynamic_instance_norm, [x, wt, b]),
        "torch": forward_backward(din_1x1_torch_way, [x, wt, b]),
    })
    table.row(["DIN 1x1", ",".join(map(str, shape)), str(dtype)[6:], "fwd", ms(t["ours"]), ms(t["torch"]),
               ms(t["bmm"]), "bmm", ratio(t["torch"], t["ours"]), ratio(t["ours"], t["bmm"]), ""])
    table.row(["", "", "", "fwd+bwd", ms(tb["ours"]), ms(tb["torch"]), "", "", ratio(tb["torch"], tb["ours"]), "", ""])
    return dict(op="cuda dynamic_instance_norm 1x1", shape=list(shape), dtype=str(dtype), fwd_ms=t["ours"] * 1e3,
                fwd_torch_ms=t["torch"] * 1e3, bmm_ms=t["bmm"] * 1e3, fwdbwd_ms=tb["ours"] * 1e3,
                fwdbwd_torch_ms=tb["torch"] * 1e3)


def bench_spatially_adaptive(shape, dtype, table) -> dict:
    x = torch.randn(*shape, device=DEVICE, dtype=dtype)
    gamma = torch.randn(*shape, device=DEVICE, dtype=dtype)
    beta = torch.randn(*shape, device=DEVICE, dtype=dtype)
    ours = din_ops.spatially_adaptive_instance_norm
    t = gpu_compare({
        "ours": lambda: ours(x, gamma, beta),
        "torch": lambda: reference.spatially_adaptive_instance_norm(x, gamma, beta),
        "floor": lambda: torch.addcmul(beta, x, gamma),
    })
    tb = gpu_compare({
        "ours": forward_backward(ours, [x, gamma, beta]),
        "torch": forward_backward(reference.spatially_adaptive_instance_norm, [x, gamma, beta]),
    })
    table.row(["spatially adaptive", ",".join(map(str, shape)), str(dtype)[6:], "fwd", ms(t["ours"]), ms(t["torch"]),
               ms(t["floor"]), "addcmul", ratio(t["torch"], t["ours"]), ratio(t["ours"], t["floor"]), ""])
    table.row(["", "", "", "fwd+bwd", ms(tb["ours"]), ms(tb["torch"]), "", "", ratio(tb["torch"], tb["ours"]), "", ""])
    return dict(op="cuda spatially_adaptive full", shape=list(shape), dtype=str(dtype), fwd_ms=t["ours"] * 1e3,
                fwd_torch_ms=t["torch"] * 1e3, floor_ms=t["floor"] * 1e3, fwdbwd_ms=tb["ours"] * 1e3,
                fwdbwd_torch_ms=tb["torch"] * 1e3)


def bench_depthwise(shape, dtype, table) -> dict:
    n, c, h, w = shape
    x = torch.randn(n, c, h, w, device=DEVICE, dtype=dtype)
    wt = torch.randn(n, c, 1, 3, 3, device=DEVICE, dtype=dtype) / 3
    b = torch.randn(n, c, device=DEVICE, dtype=dtype)
    kw = dict(padding=1, groups=c)

    def ours(x, wt, b):
        return din_ops.dynamic_instance_norm(x, wt, b, **kw)

    def ref(x, wt, b):
        return reference.dynamic_instance_norm(x, wt, b, **kw)

    t = gpu_compare({"ours": lambda: ours(x, wt, b), "torch": lambda: ref(x, wt, b)})
    tb = gpu_compare({"ours": forward_backward(ours, [x, wt, b]), "torch": forward_backward(ref, [x, wt, b])})
    table.row(["DIN depthwise 3x3", ",".join(map(str, shape)), str(dtype)[6:], "fwd", ms(t["ours"]), ms(t["torch"]),
               "", "", ratio(t["torch"], t["ours"]), "", ""])
    table.row(["", "", "", "fwd+bwd", ms(tb["ours"]), ms(tb["torch"]), "", "", ratio(tb["torch"], tb["ours"]), "", ""])
    return dict(op="cuda dynamic_instance_norm depthwise 3x3", shape=list(shape), dtype=str(dtype),
                fwd_ms=t["ours"] * 1e3, fwd_torch_ms=t["torch"] * 1e3, fwdbwd_ms=tb["ours"] * 1e3,
                fwdbwd_torch_ms=tb["torch"] * 1e3)


def torchvision_deformable(x, wt, b, offset, mask):
    """The deformable DIN from PyTorch parts: F.instance_norm, then one torchvision deform_conv2d
    call with the batch folded into the groups (sample n's channels form group n, its offsets
    offset group n), which applies every sample's own weight."""
    from torchvision.ops import deform_conv2d

    n, c, h, w = x.shape
    co = wt.shape[1]
    xh = F.instance_norm(x).reshape(1, n * c, h, w)
    off = offset.reshape(1, -1, *offset.shape[2:])
    m = mask.reshape(1, -1, *mask.shape[2:])
    y = deform_conv2d(xh, off, wt.reshape(n * co, *wt.shape[2:]), b.reshape(-1), padding=1, mask=m)
    return y.reshape(n, co, *y.shape[2:])


def bench_deformable(shape, dtype, table) -> dict:
    missing = torchvision_deform_missing(DEVICE, dtype)
    if missing:
        print(f"deformable 3x3 DIN {str(dtype)[6:]}: skipped: {missing}")
        return {}
    n, c, h, w = shape
    g = torch.Generator(device=DEVICE).manual_seed(0)
    x = torch.randn(n, c, h, w, device=DEVICE, dtype=dtype, generator=g)
    wt = torch.randn(n, c, c, 3, 3, device=DEVICE, dtype=dtype, generator=g) / (9 * c) ** 0.5
    b = torch.randn(n, c, device=DEVICE, dtype=dtype, generator=g)
    offset = 2 * torch.randn(n, 18, h, w, device=DEVICE, dtype=dtype, generator=g)
    mask = torch.rand(n, 9, h, w, device=DEVICE, dtype=dtype, generator=g)

    def ours(x, wt, b, offset, mask):
        return din_ops.dynamic_instance_norm(x, wt, b, offset=offset, mask=mask, padding=1)

    args = [x, wt, b, offset, mask]
    t = gpu_compare({"ours": lambda: ours(*args), "torch": lambda: torchvision_deformable(*args)})
    tb = gpu_compare({"ours": forward_backward(ours, args), "torch": forward_backward(torchvision_deformable, args)})
    table.row(["DIN deformable 3x3", ",".join(map(str, shape)), str(dtype)[6:], "fwd", ms(t["ours"]), ms(t["torch"]),
               "", "torchvision", ratio(t["torch"], t["ours"]), "", ""])
    table.row(["", "", "", "fwd+bwd", ms(tb["ours"]), ms(tb["torch"]), "", "", ratio(tb["torch"], tb["ours"]), "", ""])
    return dict(op="cuda deformable 3x3", shape=list(shape), dtype=str(dtype), fwd_ms=t["ours"] * 1e3,
                fwd_torch_ms=t["torch"] * 1e3, fwdbwd_ms=tb["ours"] * 1e3, fwdbwd_torch_ms=tb["torch"] * 1e3)


# (op of a result, what is checked, the value from a result, the comparison, the threshold)
TARGETS = [
    ("cuda instance_norm", "fwd, fraction of x.clone() bandwidth", lambda r: r["copy_fraction"], ">=", 0.80),
    ("cuda dynamic_instance_norm 1x1", "fwd, din_ops / bmm", lambda r: r["fwd_ms"] / r["bmm_ms"], "<=", 1.3),
    ("cuda dynamic_instance_norm 1x1", "fwd+bwd, reference / din_ops",
     lambda r: r["fwdbwd_torch_ms"] / r["fwdbwd_ms"], ">=", 2.0),
    ("cuda spatially_adaptive full", "fwd, din_ops / addcmul floor", lambda r: r["fwd_ms"] / r["floor_ms"], "<=", 1.3),
    ("cuda deformable 3x3", "fwd+bwd, torchvision / din_ops", lambda r: r["fwdbwd_torch_ms"] / r["fwdbwd_ms"], ">=", 3.0),
]


def targets(results: list[dict]) -> list[str]:
    """One line per (target, result row): the value and whether the target holds."""
    lines = []
    for op, what, value, cmp, threshold in TARGETS:
        for r in results:
            if r.get("op") != op:
                continue
            v = value(r)
            ok = v >= threshold if cmp == ">=" else v <= threshold
            lines.append(f"{op} {tuple(r['shape'])} {r['dtype'][6:]}: {what} = {v:.2f} (target {cmp} {threshold}): "
                         f"{'HOLDS' if ok else 'DOES NOT HOLD'}")
    return lines


def run(quick: bool = False) -> list[dict]:
    """The GPU rows; prints that they were skipped and returns [] without a CUDA build and a GPU."""
    if DEVICE == "cuda" and not available():
        print("\nCUDA benchmarks: skipped (no CUDA build of din_ops or no GPU)")
        return []
    print(f"\nCUDA benchmarks on {device_line() if DEVICE == 'cuda' else DEVICE}")
    print("time in ms (median of CUDA-event timings); vs torch = torch / din_ops; vs floor = din_ops / floor,"
          " except instance_norm: copy / din_ops (fraction of copy bandwidth) and GB/s = bytes read + written / time")
    table = Table(["op", "N,C,H,W", "dtype", "pass", "din_ops", "torch", "floor", "floor is", "vs torch", "vs floor",
                   "GB/s"])
    table.header()
    results = []
    for dtype in DTYPES:
        shape = QUICK_SHAPE if quick else SHAPE
        results.append(bench_instance_norm(shape, dtype, table))
        results.append(bench_din_1x1(shape, dtype, table))
        results.append(bench_spatially_adaptive(shape, dtype, table))
        results.append(bench_depthwise(QUICK_SHAPE if quick else DW_SHAPE, dtype, table))
        deformable = bench_deformable(QUICK_SHAPE if quick else DEFORM_SHAPE, dtype, table)
        if deformable:
            results.append(deformable)
        if DEVICE == "cuda":
            torch.cuda.empty_cache()
    print("\ntargets:")
    for line in targets(results):
        print("  " + line)
    return results


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog=f"python -m {__package__}.bench_cuda", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small shapes")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    parser.add_argument("--dry", action="store_true", help="list the rows and targets; measure nothing")
    args = parser.parse_args(argv)
    if args.dry:
        dtypes = ", ".join(str(d)[6:] for d in DTYPES)
        print(f"bench_cuda rows (dtypes {dtypes}; fwd and fwd+bwd): instance_norm, DIN 1x1 and spatially adaptive "
              f"at {SHAPE}, DIN depthwise 3x3 at {DW_SHAPE}, DIN deformable 3x3 at {DEFORM_SHAPE}")
        print("targets:")
        for op, what, _, cmp, threshold in TARGETS:
            print(f"  {op}: {what} {cmp} {threshold}")
        return
    results = run(args.quick)
    if args.json and results:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"machine": device_line(), "results": results, "targets": targets(results)}, f, indent=1)
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
