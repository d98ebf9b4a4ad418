"""din-bench (also python -m din_ops.benchmarks; in a source checkout python -m benchmarks or make
bench): every din_ops operator on every available backend beside the PyTorch composition and the
floor, forward and forward+backward, with memory figures.

The tables go to stdout, progress to stderr; the rows and a description of the machine are saved as
JSON (and the tables as text) under --out: by default benchmarks/results/ in a source checkout, else
./din-bench-results/. See docs/benchmarks.md for the columns.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import sys
from typing import Optional, Sequence

import torch

from . import registry
from .common import steady_allocations
from .measure import describe, flush_bytes, machine_info
from .runner import Progress, Settings, backends_for, check_targets, dtype_name, memory_note, plan, print_targets, run
from .shapes import DEFAULT

DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16, "bfloat16": torch.bfloat16}
# Where results go without --out: the committed benchmarks/results/ when this package is the
# benchmarks/ folder of a source checkout, else (an installed din_ops.benchmarks) ./din-bench-results.
USER_RESULTS = "din-bench-results"


def checkout_results(package_dir: Optional[str] = None) -> Optional[str]:
    """``benchmarks/results`` of the source checkout this package was loaded from, or None.

    A checkout is recognized by the package being a folder named ``benchmarks`` with a ``results``
    folder, beside a ``.git`` (a folder, or a file in a git worktree) in the folder above it.
    """
    here = os.path.dirname(os.path.abspath(__file__)) if package_dir is None else os.path.abspath(package_dir)
    results = os.path.join(here, "results")
    root = os.path.dirname(here)
    if os.path.basename(here) == "benchmarks" and os.path.isdir(results) and os.path.exists(os.path.join(root, ".git")):
        return results
    return None


def default_out() -> str:
    """The folder for saved results when --out is not given (see :func:`checkout_results`)."""
    return checkout_results() or os.path.join(os.getcwd(), USER_RESULTS)


def _csv(text: Optional[str]) -> Optional[list[str]]:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="din-bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ops", help="comma-separated op names or parts of them (default: all); see --list")
    p.add_argument("--backends", help="comma-separated din_ops backends (default: every available one); "
                   "the torch baseline and the floor always run")
    p.add_argument("--dtypes", default="float32", help="comma-separated: float32, float64, float16, bfloat16")
    p.add_argument("--shapes", help=f"comma-separated: model, model512, model1024, targets, quick or NxCxHxW "
                   f"(default: {DEFAULT}; with --quick: quick)")
    p.add_argument("--device", help="cpu or cuda (default: cuda when a GPU is present, else cpu)")
    p.add_argument("--quick", action="store_true", help="tiny shapes and short timing: seconds")
    p.add_argument("--sweep", action="store_true", help="scaling sweeps over H*W, C and N instead of the table "
                   "(JSON and, with matplotlib, a PNG per op)")
    p.add_argument("--json", help="also write the results to this JSON file")
    p.add_argument("--out", help=f"folder for the saved results (default: benchmarks/results in a source "
                   f"checkout, else ./{USER_RESULTS})")
    p.add_argument("--no-save", action="store_true", help="do not write anything under --out")
    p.add_argument("--min-time", type=float, help="seconds of timing per provider and pass (default 0.1, "
                   "quick 0.01); every provider runs at least --reps times")
    p.add_argument("--reps", type=int, help="at least this many timed calls per provider (default 5, quick 3)")
    p.add_argument("--max-time", type=float, default=3.0, help="a pass that has taken this many seconds stops "
                   "after 3 calls per provider, even below --reps (default 3)")
    p.add_argument("--cold", action="store_true", help="cache-cold timing: before every timed call (outside its "
                   "time) a read of twice the last-level caches (GPU: a write and a read of twice the L2) "
                   "evicts the inputs, as in a network whose activations outgrow the caches; slower, use "
                   "with --ops")
    p.add_argument("--no-memory", action="store_true", help="skip the saved-bytes and peak-memory figures")
    p.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")
    p.add_argument("--list", action="store_true", help="list the benchmarks and the shapes they would run, then exit")
    return p


def _slug(info: dict) -> str:
    """A file-name stem naming the device: cpu-xeon-2core, cuda-nvidia-h100-80gb-hbm3, ..."""
    if info["device"] == "cuda":
        name = info.get("gpu", "gpu")
        return "cuda-" + re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    words = re.sub(r"\(r\)|\(tm\)|cpu|processor|intel|amd|@.*|[0-9.]+ghz", " ", info["cpu"].lower()).split()
    return f"cpu-{words[0] if words else 'unknown'}-{info['usable_cpus']}core"


class _Tee(io.TextIOBase):
    """Writes to stdout and keeps a copy (the .txt saved beside the JSON)."""

    def __init__(self, stream) -> None:
        self.stream, self.copy = stream, io.StringIO()

    def write(self, text: str) -> int:
        self.stream.write(text)
        self.copy.write(text)
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


def _write(path: str, content: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
    with open(path, "w") as f:
        f.write(content)
    return path


def _write_json(path: str, data: dict) -> str:
    """Writes a run's JSON, with the load average at the end of the run beside the one at its start."""
    if hasattr(os, "getloadavg"):
        data["machine"]["load_average_1m_end"] = os.getloadavg()[0]
    return _write(path, json.dumps(data, indent=1))


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parser().parse_args(argv)
    if args.out is None:
        args.out = default_out()
    try:
        dtypes = [DTYPES[d] for d in _csv(args.dtypes) or ["float32"]]
    except KeyError as error:
        parser().error(f"unknown dtype {error}; expected one of {', '.join(DTYPES)}")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type not in ("cpu", "cuda") or (device.type == "cuda" and not torch.cuda.is_available()):
        parser().error(f"device {args.device!r} is not usable here (cpu, or cuda where a GPU is present)")
    base = Settings.quick() if args.quick else Settings()
    settings = Settings(
        device=device, dtypes=dtypes, backends=_csv(args.backends),
        shapes=args.shapes or base.shapes, min_time=base.min_time if args.min_time is None else args.min_time,
        min_reps=base.min_reps if args.reps is None else args.reps, warmup=base.warmup, memory=not args.no_memory,
        max_time=args.max_time, cold=args.cold,
    )
    try:
        benches, legacy = registry.select(_csv(args.ops))
        cases = plan(benches, settings)
        backends_for(device, settings.backends)
    except ValueError as error:
        parser().error(str(error))
    if args.list:
        for b in benches:
            shapes = [c[2] for c in cases if c[0] is b]
            print(f"{b.name:30} {b.unit:8} {b.module}: " + ", ".join("x".join(map(str, s)) for s in shapes))
        for b in legacy:
            print(f"{b.name:30} {'':8} old style: run(quick)")
        for name, error in registry.failed().items():
            print(f"{name:30} {'':8} not importable: {error}")
        return 0

    steady_allocations()
    info = machine_info(device)
    tee = _Tee(sys.stdout)
    print(f"din-bench: {describe(info)}; backends: {', '.join(info['backends'])}", file=tee)
    print("vs torch = torch median / this median (above 1: faster than the PyTorch composition); "
          "% floor = 100 * floor median / this median;", file=tee)
    print(f"rate = minimal bytes or FLOPs / median; saved MiB: kept by autograd for backward; {memory_note(device)}",
          file=tee)
    if settings.cold:
        size = flush_bytes(device) / 2**20
        what = f"{size:.0f} MiB written, then {size:.0f} MiB read" if device.type == "cuda" else f"{size:.0f} MiB read"
        skipped = f"; left out (they time themselves, warm): {', '.join(b.name for b in legacy)}" if legacy else ""
        print(f"cache-cold: before every timed call {what} (twice the last-level caches, untimed), so each "
              f"call finds its inputs in memory{skipped}", file=tee)
    for name, error in registry.failed().items():
        print(f"din-bench: skipping {name}: {error}", file=sys.stderr)
    load, cpus = info["load_average_1m"], info["usable_cpus"] or 1
    if load is not None and load > 0.5 * cpus and "OMP_WAIT_POLICY" not in os.environ:
        print(f"din-bench: the machine is busy (load {load:.1f} on {cpus} CPUs): times will be slow and noisy; "
              "on a shared machine OMP_WAIT_POLICY=PASSIVE keeps idle threads from spinning", file=sys.stderr)

    stem = f"{_slug(info)}-{info['date'][:10]}-{info['date'][11:13]}{info['date'][14:16]}"
    stem += "-cold" if settings.cold else ""
    data: dict = {"machine": info, "command": "din-bench " + " ".join(argv if argv is not None else sys.argv[1:]),
                  "settings": settings.as_dict(), "memory_method": memory_note(device)}
    paths = []
    if args.sweep:
        from .sweep import AXES, QUICK_AXES, plot, sweep

        points = sum(len(v) for v in (QUICK_AXES if args.quick else AXES).values())
        progress = Progress(points * len(benches) * len(dtypes), enabled=not args.no_progress)
        rows = []
        for bench in benches:
            for dtype in dtypes:
                op_rows = sweep(bench, settings, quick=args.quick, dtype=dtype, progress=progress, out=tee)
                rows += op_rows
                if args.no_save:
                    continue
                path = os.path.join(args.out, f"sweep-{bench.name}-{dtype_name(dtype)}-{stem}")
                path += "-quick" if args.quick else ""
                paths.append(_write_json(path + ".json", dict(data, results=op_rows)))
                if plot(op_rows, info, path + ".png"):
                    paths.append(path + ".png")
                else:
                    print("din-bench: matplotlib is not installed (pip install 'din_ops[plot]'): no plot",
                          file=sys.stderr)
        progress.finish()
        data["results"] = rows
    else:
        progress = Progress(2 * len(cases), enabled=not args.no_progress)
        rows = run(benches, settings, out=tee, progress=progress)
        targets = check_targets(benches, rows)
        print_targets(targets, tee)
        legacy_rows = {}
        for b in legacy if not settings.cold else []:  # they time themselves, warm
            with contextlib.redirect_stdout(tee):
                legacy_rows[b.name] = [r for dtype in dtypes for r in b.call(args.quick, dtype)]
        progress.finish()
        data.update(results=rows, targets=targets, legacy=legacy_rows, not_importable=registry.failed())
        if not args.no_save:
            path = os.path.join(args.out, stem + ("-quick" if args.quick else ""))
            paths.append(_write_json(path + ".json", data))
            paths.append(_write(path + ".txt", tee.copy.getvalue()))
    if args.json:
        paths.append(_write_json(args.json, data))
    for path in paths:
        print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
