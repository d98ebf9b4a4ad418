"""backend="triton" beside the CUDA backend and the reference, on a GPU.

Providers, all in the same run and on the same tensors:
  triton    : backend="triton" (autotuned on first use; that call is not timed)
  cuda      : backend="cuda" (the compiled CUDA kernels), where this build has them
  reference : backend="reference" (plain PyTorch ops)
  floor     : 1x1 DIN: torch.bmm of the same shapes (W @ x, no normalization; forward+backward: the
              three products W @ x, gy @ x^T and W^T @ gy); instance norm: x.clone(), one read and
              one write of x, the bandwidth floor for forward

Targets (H100/H200): triton 1x1 DIN forward within 1.2x of cuda; triton instance norm forward at
least 75% of the copy floor's throughput ("of floor" = copy time / triton time).

Times are GPU times from triton.testing.do_bench (median, L2 flushed before each call). Without a GPU
the module prints one line and returns no rows: the interpreter is no measure of speed.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

import din_ops

from .common import Table, ms, ratio

# Cache-resident and larger-than-L2 (50 MiB on an H100) shapes.
DIN_SHAPES = [(8, 64, 128, 128), (8, 128, 64, 64), (4, 256, 32, 32), (16, 256, 64, 64)]
IN_SHAPES = [(8, 64, 128, 128), (8, 128, 64, 64), (4, 256, 32, 32), (16, 128, 128, 128)]
QUICK_SHAPES = [(2, 16, 16, 16)]
# --targets-only (the short GPU run): one larger-than-L2 shape of each table, where the targets are set.
TARGET_DIN_SHAPES = [(16, 256, 64, 64)]
TARGET_IN_SHAPES = [(16, 128, 128, 128)]
DTYPES = [torch.float32, torch.bfloat16]


def _gpu_ms(fn: Callable[[], object]) -> float:
    import triton.testing

    return float(triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median"))


def _fwd_bwd(fn: Callable[..., torch.Tensor], inputs: list[torch.Tensor]) -> Callable[[], None]:
    leaves = [t.detach().requires_grad_() for t in inputs]
    grad = torch.randn_like(fn(*leaves))

    def run() -> None:
        for t in leaves:
            t.grad = None
        fn(*leaves).backward(grad)

    return run


def _providers(make: Callable[[str], Callable[[], object]], floor: Optional[Callable[[], object]],
               timer: Callable[[Callable[[], object]], float], device: str) -> dict:
    names = ["triton"] + (["cuda"] if device == "cuda" and "cuda" in din_ops.available_backends() else [])
    times = {name: timer(make(name)) for name in names + ["reference"]}
    if floor is not None:
        times["floor"] = timer(floor)
    return times


def _cell(times: dict, name: str) -> str:
    return ms(times[name] / 1e3) if name in times else "-"


def _rows(op: str, shape, dtype, pass_name: str, times: dict) -> dict:
    row = {"op": op, "shape": list(shape), "dtype": str(dtype), "pass": pass_name}
    row.update({f"{name}_ms": t for name, t in times.items()})
    return row


def shapes(quick: bool, targets_only: bool) -> tuple[list, list]:
    """(1x1 DIN shapes, instance-norm shapes) of a run."""
    if quick:
        return QUICK_SHAPES, QUICK_SHAPES
    if targets_only:
        return TARGET_DIN_SHAPES, TARGET_IN_SHAPES
    return DIN_SHAPES, IN_SHAPES


def run(quick: bool = False, targets_only: bool = False) -> list[dict]:
    if not torch.cuda.is_available():
        print("\nbench_triton: needs a CUDA GPU (backend='triton' vs 'cuda' vs 'reference'); skipped here")
        return []
    return measure(quick, "cuda", _gpu_ms, targets_only=targets_only)


def measure(quick: bool, device: str, timer: Callable[[Callable[[], object]], float],
            targets_only: bool = False) -> list[dict]:
    """The rows and tables of :func:`run` on ``device`` with ``timer`` (fn -> ms); the tests drive it
    on CPU tensors under the interpreter with a stand-in timer, to check the bookkeeping."""
    din_shapes, in_shapes = shapes(quick, targets_only)
    results = []
    din_table = Table(["N,C,H,W", "dtype", "pass", "triton", "cuda", "reference", "bmm", "vs cuda", "vs bmm"])
    print("\ndynamic_instance_norm 1x1, Co = C, GPU time in ms (median); vs cuda = triton / cuda "
          "(target <= 1.20x forward), vs bmm = triton / bmm")
    din_table.header()
    for dtype in DTYPES:
        for n, c, h, w in din_shapes:
            torch.manual_seed(0)
            x = torch.randn(n, c, h, w, device=device, dtype=dtype)
            wt = (torch.randn(n, c, c, device=device, dtype=dtype) / c**0.5)
            b = torch.randn(n, c, device=device, dtype=dtype)
            xv, gy = x.view(n, c, h * w), torch.randn(n, c, h * w, device=device, dtype=dtype)
            wT, xT = wt.transpose(1, 2).contiguous(), xv.transpose(1, 2)
            shape = (n, c, h, w)

            def fwd(backend):
                return lambda: din_ops.dynamic_instance_norm(x, wt, b, backend=backend)

            def fwd_bwd(backend):
                return _fwd_bwd(lambda *a: din_ops.dynamic_instance_norm(*a, backend=backend), [x, wt, b])

            for pass_name, make, floor in [
                ("fwd", fwd, lambda: torch.bmm(wt, xv)),
                ("fwd+bwd", fwd_bwd, lambda: (torch.bmm(wt, xv), torch.bmm(gy, xT), torch.bmm(wT, gy))),
            ]:
                t = _providers(make, floor, timer, device)
                vs_cuda = ratio(t["triton"], t["cuda"]) if "cuda" in t else "-"
                din_table.row([",".join(map(str, shape)), str(dtype).replace("torch.", ""), pass_name,
                               _cell(t, "triton"), _cell(t, "cuda"), _cell(t, "reference"), _cell(t, "floor"),
                               vs_cuda, ratio(t["triton"], t["floor"])])
                results.append(_rows("triton dynamic_instance_norm 1x1", shape, dtype, pass_name, t))

    in_table = Table(["N,C,H,W", "dtype", "pass", "triton", "cuda", "reference", "copy", "vs cuda", "of floor"])
    print("\ninstance_norm, GPU time in ms (median); vs cuda = triton / cuda, of floor = copy / triton "
          "(target >= 75% forward)")
    in_table.header()
    for dtype in DTYPES:
        for shape in in_shapes:
            torch.manual_seed(0)
            x = torch.randn(*shape, device=device, dtype=dtype)
            for pass_name, make, floor in [
                ("fwd", lambda be: (lambda: din_ops.instance_norm(x, backend=be)), lambda: x.clone()),
                ("fwd+bwd", lambda be: _fwd_bwd(lambda a: din_ops.instance_norm(a, backend=be), [x]), None),
            ]:
                t = _providers(make, floor, timer, device)
                vs_cuda = ratio(t["triton"], t["cuda"]) if "cuda" in t else "-"
                of_floor = f"{100 * t['floor'] / t['triton']:.0f}%" if "floor" in t else ""
                in_table.row([",".join(map(str, shape)), str(dtype).replace("torch.", ""), pass_name,
                              _cell(t, "triton"), _cell(t, "cuda"), _cell(t, "reference"), _cell(t, "floor"),
                              vs_cuda, of_floor])
                results.append(_rows("triton instance_norm", shape, dtype, pass_name, t))
    return results


def targets(results: list[dict]) -> list[str]:
    """One line per GPU target: triton 1x1 forward <= 1.2x cuda, triton instance norm forward >= 75%
    of the copy floor."""
    lines = []
    for r in results:
        if r["pass"] != "fwd":
            continue
        where = f"{tuple(r['shape'])} {r['dtype'].replace('torch.', '')}"
        if r["op"].endswith("1x1") and "cuda_ms" in r:
            v = r["triton_ms"] / r["cuda_ms"]
            lines.append(f"triton 1x1 DIN fwd {where}: {v:.2f}x cuda (target <= 1.20): {'HOLDS' if v <= 1.2 else 'DOES NOT HOLD'}")
        if r["op"].endswith("instance_norm") and "floor_ms" in r:
            v = r["floor_ms"] / r["triton_ms"]
            lines.append(f"triton instance_norm fwd {where}: {100 * v:.0f}% of copy (target >= 75%): "
                         f"{'HOLDS' if v >= 0.75 else 'DOES NOT HOLD'}")
    return lines


def main(argv=None) -> None:
    import argparse
    import json
    import os

    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_triton", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one small shape")
    parser.add_argument("--targets-only", action="store_true", help="only the shapes the GPU targets are set at")
    parser.add_argument("--dry", action="store_true", help="list the rows and targets; measure nothing")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    din_shapes, in_shapes = shapes(args.quick, args.targets_only)
    if args.dry:
        print("bench_triton rows (dtypes " + ", ".join(str(d).replace("torch.", "") for d in DTYPES) + "; fwd and fwd+bwd):")
        print("  dynamic_instance_norm 1x1 at " + ", ".join(map(str, din_shapes)) + ": triton, cuda, reference, bmm floor")
        print("  instance_norm at " + ", ".join(map(str, in_shapes)) + ": triton, cuda, reference, copy floor")
        print("targets: triton 1x1 DIN forward <= 1.20x cuda; triton instance_norm forward >= 75% of the copy floor")
        return
    results = run(args.quick, args.targets_only)
    if results:
        print("\ntargets:")
        for line in targets(results):
            print("  " + line)
    if args.json and results:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"machine": torch.cuda.get_device_name(0), "results": results, "targets": targets(results)}, f, indent=1)
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
