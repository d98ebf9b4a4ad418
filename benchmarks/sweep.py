"""Scaling sweeps: time against H*W, C and N for every provider of an op, as JSON and a PNG plot.

Around a base of one image with 64 channels, one size varies at a time:
  H*W : N = 1, C = 64,  H = W in 32 .. 512
  C   : N = 1, H = W = 128, C in 16 .. 256
  N   : C = 64, H = W = 64, N in 1 .. 16
(``quick``: two tiny points per axis.) Forward and forward+backward, providers as in the tables (every
backend, torch, the floor), timed in the same rounds. The plot (matplotlib, optional: ``pip install
din_ops[plot]``) has one panel per axis and pass, one line per provider, log-log, and is labelled
with the device, the versions and the date.
"""
from __future__ import annotations

import sys
from typing import Optional, Sequence, TextIO

import torch

from .measure import describe, measure
from .registry import OpBench, Shape
from .runner import PASSES, Progress, Settings, _fwdbwd, backends_for, before_call, dtype_name
from .shapes import label

AXES: dict[str, list[Shape]] = {
    "H*W": [(1, 64, s, s) for s in (32, 64, 128, 256, 512)],
    "C": [(1, c, 128, 128) for c in (16, 32, 64, 128, 256)],
    "N": [(n, 64, 64, 64) for n in (1, 2, 4, 8, 16)],
}
QUICK_AXES: dict[str, list[Shape]] = {
    "H*W": [(1, 8, 8, 8), (1, 8, 16, 16)],
    "C": [(1, 8, 8, 8), (1, 16, 8, 8)],
    "N": [(1, 8, 8, 8), (2, 8, 8, 8)],
}


def _size(axis: str, shape: Shape) -> int:
    n, c, h, w = shape
    return {"H*W": h * w, "C": c, "N": n}[axis]


def sweep(bench: OpBench, settings: Settings, quick: bool = False, dtype: torch.dtype = torch.float32,
          progress: Optional[Progress] = None, out: TextIO = sys.stdout) -> list[dict]:
    """Times every provider of ``bench`` at every point of every axis; prints one line per point."""
    device = settings.device
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else None
    backends = backends_for(device, settings.backends)
    axes = QUICK_AXES if quick else AXES
    progress = progress or Progress(sum(len(v) for v in axes.values()))
    rows = []
    print(f"\nsweep {bench.name}, {dtype_name(dtype)}, {device.type}: median ms per provider", file=out)
    for axis, shapes in axes.items():
        for shape in shapes:
            if not bench.accepts(shape):
                continue
            progress.step(f"sweep {bench.name} {axis} {label(shape)}")
            torch.manual_seed(0)
            inputs = bench.inputs(shape, dtype, device)
            with torch.no_grad():
                gy = torch.randn_like(bench.pytorch(*inputs))
            providers = {b: bench.din(b) for b in backends}
            providers["torch"] = bench.pytorch
            for passes in PASSES:
                if passes == "fwd":
                    fns = {name: (lambda fn=fn: fn(*inputs)) for name, fn in providers.items()}
                    fns[bench.floor.name] = bench.floor.fwd(*inputs)
                else:
                    fns = {name: _fwdbwd(fn, inputs, gy) for name, fn in providers.items()}
                    if bench.floor.fwdbwd is not None:
                        fns[bench.floor.name] = bench.floor.fwdbwd(*inputs, gy)
                timings = measure(fns, min_time=settings.min_time, min_reps=settings.min_reps,
                                  max_time=settings.max_time, warmup=settings.warmup, sync=sync,
                                  before=before_call(settings))
                cells = []
                for name, t in timings.items():
                    kind = "floor" if name == bench.floor.name else ("baseline" if name == "torch" else "backend")
                    rows.append(dict(op=bench.name, axis=axis, size=_size(axis, shape), shape=list(shape),
                                     dtype=dtype_name(dtype), device=device.type, provider=name, kind=kind,
                                     cache="cold" if settings.cold else "warm",
                                     **{"pass": passes}, **t.as_ms()))
                    cells.append(f"{name} {t.median * 1e3:.3f}")
                print(f"  {axis:>4} {label(shape):>16} {passes:>7}: " + ", ".join(cells), file=out, flush=True)
    return rows


def plot(rows: Sequence[dict], machine: dict, path: str) -> bool:
    """Draws the sweep of one op into ``path`` (PNG). False (and nothing written) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    axes_names = list(dict.fromkeys(r["axis"] for r in rows))
    fig, grid = plt.subplots(len(PASSES), len(axes_names), figsize=(4.2 * len(axes_names), 7), squeeze=False)
    providers = list(dict.fromkeys(r["provider"] for r in rows))
    colors = {p: f"C{i}" for i, p in enumerate(providers)}
    for i, passes in enumerate(PASSES):
        for j, axis in enumerate(axes_names):
            ax = grid[i][j]
            for provider in providers:
                pts = sorted((r["size"], r["median_ms"], r["q1_ms"], r["q3_ms"], r["kind"]) for r in rows
                             if r["axis"] == axis and r["pass"] == passes and r["provider"] == provider)
                if not pts:
                    continue
                xs, ys = [p[0] for p in pts], [p[1] for p in pts]
                floor = pts[0][4] == "floor"
                ax.plot(xs, ys, marker="o", markersize=3, label=provider, color="0.45" if floor else colors[provider],
                        linestyle="--" if floor else "-")
                ax.fill_between(xs, [p[2] for p in pts], [p[3] for p in pts], alpha=0.15,
                                color="0.45" if floor else colors[provider])
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel(axis)
            ax.set_ylabel(f"{passes} time (ms)")
            ax.grid(True, which="both", alpha=0.3)
            fixed = {"H*W": "N=1, C=64", "C": "N=1, H=W=128", "N": "C=64, H=W=64"}.get(axis, "")
            ax.set_title(f"{passes} vs {axis} ({fixed})" if fixed else f"{passes} vs {axis}", fontsize=9)
    grid[0][0].legend(fontsize=8)
    op = rows[0]["op"] if rows else ""
    dtype = rows[0]["dtype"] if rows else ""
    cold = ", cache-cold" if rows and rows[0].get("cache") == "cold" else ""
    fig.suptitle(f"din_ops {op} ({dtype}{cold}): median time, shaded interquartile range\n{describe(machine)}",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
