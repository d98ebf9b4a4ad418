"""Runs the declared operator benchmarks: every provider of every case, timed in the same rounds.

Providers of one case, in table order:
  <backend>  each din_ops backend that can run on the device (``din_ops.available_backends()``:
             "cpu", "cuda", later "triton"; "reference" is din_ops.reference, the textbook formulas)
  torch      the plain-PyTorch composition users write today; the "vs torch" ratio divides by it
  <extra>    other implementations an op declares (e.g. torchvision's deform_conv2d on a GPU)
  <floor>    the floor (bare bmm, copy of the same bytes, ...), measured in the same rounds

Every row of the JSON is one (op, shape, dtype, pass, provider) with its median and spread (ms), and
  vs_torch   = torch median / this median      (above 1: faster than the PyTorch composition)
  floor_pct  = 100 * floor median / this median (100: as fast as the floor)
  rate       = the op's minimal work (bytes or FLOPs) / median, in ``rate_unit``
  saved_bytes (forward+backward rows): what autograd keeps for backward (saved-tensor hooks)
  peak_extra_bytes: peak memory of one call beyond its results (see ``measure.py``)
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence, TextIO

import torch

import din_ops
from din_ops import backends as din_backends

from .common import saved_bytes
from .measure import cache_flusher, measure, memory_method, peak_extra_bytes
from .registry import OpBench, Shape
from .shapes import label, shapes_for

PASSES = ("fwd", "fwd+bwd")


@dataclass
class Settings:
    """What one run measures and how long it spends per case."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtypes: Sequence[torch.dtype] = (torch.float32,)
    backends: Optional[Sequence[str]] = None  # None: every available one
    shapes: str = "model,targets"
    min_time: float = 0.1  # seconds per provider and pass (at least min_reps rounds)
    min_reps: int = 5
    max_time: float = 3.0  # seconds per pass: slow cases stop there (after at least 3 rounds)
    warmup: int = 1
    memory: bool = True
    cold: bool = False  # evict the caches before every timed call (measure.cache_flusher)

    @classmethod
    def quick(cls, **kwargs) -> "Settings":
        values = dict(shapes="quick", min_time=0.01, min_reps=3, warmup=1)
        values.update(kwargs)
        return cls(**values)

    def as_dict(self) -> dict:
        return {
            "device": str(self.device),
            "dtypes": [str(d).replace("torch.", "") for d in self.dtypes],
            "backends": list(self.backends) if self.backends else None,
            "shapes": self.shapes,
            "min_time_s": self.min_time,
            "min_reps": self.min_reps,
            "max_time_s": self.max_time,
            "warmup": self.warmup,
            "memory": self.memory,
            "cache": "cold" if self.cold else "warm",
        }


_FLUSHERS: dict[str, Callable[[], object]] = {}


def before_call(settings: Settings) -> Optional[Callable[[], object]]:
    """What runs before each timed call (outside its time): the cache flush of a cold run, else
    nothing. One flush buffer per device, kept for the process."""
    if not settings.cold:
        return None
    key = str(settings.device)
    if key not in _FLUSHERS:
        _FLUSHERS[key] = cache_flusher(settings.device)[0]
    return _FLUSHERS[key]


class Progress:
    """Progress on stderr (so stdout keeps only the tables): one line per step, with elapsed time and
    an estimate of what is left."""

    def __init__(self, total: int, stream: TextIO = sys.stderr, enabled: bool = True) -> None:
        self.total, self.done, self.stream, self.enabled = max(total, 1), 0, stream, enabled
        self.start = time.perf_counter()
        self.tty = enabled and getattr(stream, "isatty", lambda: False)()

    def step(self, what: str) -> None:
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.start
        left = ""
        if self.done:
            left = f", ~{elapsed / self.done * (self.total - self.done):.0f} s left"
        line = f"[{self.done + 1}/{self.total} {elapsed:.0f} s{left}] {what}"
        if self.tty:
            self.stream.write("\r\033[K" + line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
        self.done += 1

    def finish(self) -> None:
        if self.enabled:
            elapsed = time.perf_counter() - self.start
            self.stream.write(("\r\033[K" if self.tty else "") + f"done in {elapsed:.0f} s\n")
            self.stream.flush()


def backends_for(device: torch.device, wanted: Optional[Sequence[str]] = None) -> list[str]:
    """The available din_ops backends that run tensors of ``device`` (optionally only ``wanted``).

    Raises ValueError for a wanted backend this installation does not have.
    """
    available = din_ops.available_backends()
    if wanted:
        unknown = [b for b in wanted if b not in available]
        if unknown:
            raise ValueError(
                f"din-bench: backend(s) {', '.join(unknown)} not available here; available: {', '.join(available)}"
            )
    found = []
    for backend in available:
        if wanted and backend not in wanted:
            continue
        # Triton on CPU tensors is its interpreter (for tests, ~1000x slower): only when asked for.
        if backend == "triton" and device.type != "cuda" and not wanted:
            continue
        try:
            din_backends.resolve(backend, device)
        except (ValueError, RuntimeError):
            continue
        found.append(backend)
    return found


def _fwdbwd(fn: Callable[..., torch.Tensor], inputs: list[torch.Tensor], gy: torch.Tensor) -> Callable[[], list]:
    """A closure running fn(*inputs) and its backward with the upstream gradient gy; returns the
    input gradients (the closure's results, for the memory figure)."""
    leaves = [t.detach().requires_grad_(t.is_floating_point()) for t in inputs]

    def run() -> list:
        for t in leaves:
            t.grad = None
        fn(*leaves).backward(gy)
        return [t.grad for t in leaves if t.grad is not None]

    return run


def _fwdbwd_fresh(fn: Callable[..., torch.Tensor], inputs: list[torch.Tensor], gy: torch.Tensor) -> Callable[[], list]:
    """Like :func:`_fwdbwd` but with new leaves (no gradients yet) on every call, so that no
    gradient of an earlier call is freed inside the measured one."""

    def run() -> list:
        leaves = [t.detach().requires_grad_(t.is_floating_point()) for t in inputs]
        fn(*leaves).backward(gy)
        return [t.grad for t in leaves if t.grad is not None]

    return run


def _channels_last(t: torch.Tensor) -> bool:
    return t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def run_case(bench: OpBench, set_label: str, shape: Shape, dtype: torch.dtype, settings: Settings,
             backends: Sequence[str], progress: Progress) -> list[dict]:
    """All rows of one (op, shape, dtype): both passes, every provider."""
    device = settings.device
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else None
    torch.manual_seed(0)
    inputs = bench.inputs(shape, dtype, device)
    with torch.no_grad():
        gy = torch.randn_like(bench.pytorch(*inputs))
    if _channels_last(inputs[0]) and gy.dim() == 4:
        # The gradient a channels_last network passes back is channels_last too (F.instance_norm,
        # for one, returns NCHW for a channels_last input).
        gy = gy.contiguous(memory_format=torch.channels_last)
    providers: list[tuple[str, str, Callable[..., torch.Tensor]]] = [
        (b, "backend", bench.din(b)) for b in backends if bench.backends is None or b in bench.backends
    ]
    providers.append(("torch", "baseline", bench.pytorch))
    providers += [(e.name, "extra", e.fn) for e in bench.extras if e.available(device, dtype)]
    floor = bench.floor
    work = bench.work(shape, torch.empty((), dtype=dtype).element_size())
    base = dict(op=bench.name, shape=list(shape), set=set_label, dtype=dtype_name(dtype), device=device.type,
                rate_unit=bench.unit, floor=floor.name, cache="cold" if settings.cold else "warm")
    rows: list[dict] = []
    for passes in PASSES:
        progress.step(f"{bench.name} {label(shape)} {dtype_name(dtype)} {passes}")
        if passes == "fwd":
            fns = {name: (lambda fn=fn: fn(*inputs)) for name, _, fn in providers}
            floor_fn = floor.fwd(*inputs)
        else:
            fns = {name: _fwdbwd(fn, inputs, gy) for name, _, fn in providers}
            floor_fn = floor.fwdbwd(*inputs, gy) if floor.fwdbwd is not None else None
        if floor_fn is not None:
            fns[floor.name] = floor_fn
        timings = measure(fns, min_time=settings.min_time, min_reps=settings.min_reps,
                          max_time=settings.max_time, warmup=settings.warmup, sync=sync,
                          before=before_call(settings))
        t_torch = timings["torch"].median
        t_floor = timings[floor.name].median if floor_fn is not None else None
        kinds = {name: kind for name, kind, _ in providers}
        kinds[floor.name] = "floor"
        fn_of = {name: fn for name, _, fn in providers}
        for name, timing in timings.items():
            row = dict(base, **{"pass": passes, "provider": name, "kind": kinds[name]}, **timing.as_ms())
            row["vs_torch"] = t_torch / timing.median
            row["floor_pct"] = 100.0 * t_floor / timing.median if t_floor is not None else None
            row["rate"] = bench.rate(work, passes, timing.median)
            row["saved_bytes"] = None
            row["peak_extra_bytes"] = None
            if settings.memory and name in fn_of:
                fn = fn_of[name]
                if passes == "fwd":
                    row["peak_extra_bytes"] = peak_extra_bytes(lambda: fn(*inputs), device)
                else:
                    row["saved_bytes"] = saved_bytes(fn, inputs)
                    row["peak_extra_bytes"] = peak_extra_bytes(_fwdbwd_fresh(fn, inputs, gy), device)
            rows.append(row)
        del fns, floor_fn
    return rows


def plan(benches: Sequence[OpBench], settings: Settings) -> list[tuple[OpBench, str, Shape, torch.dtype]]:
    """Every (op, set label, shape, dtype) the settings name, in run order."""
    gpu = settings.device.type == "cuda"
    cases = []
    for bench in benches:
        for dtype in settings.dtypes:
            for set_label, shape in shapes_for(bench, settings.shapes, gpu=gpu):
                cases.append((bench, set_label, shape, dtype))
    return cases


def run(benches: Sequence[OpBench], settings: Settings, out: TextIO = sys.stdout,
        progress: Optional[Progress] = None) -> list[dict]:
    """Runs every case, printing each op's table to ``out`` as its rows arrive; returns the rows."""
    backends = backends_for(settings.device, settings.backends)
    cases = plan(benches, settings)
    progress = progress or Progress(2 * len(cases))
    rows: list[dict] = []
    current = None
    for bench, set_label, shape, dtype in cases:
        if (bench.name, dtype) != current:
            current = (bench.name, dtype)
            print_header(bench, dtype, settings, out)
        case_rows = run_case(bench, set_label, shape, dtype, settings, backends, progress)
        print_rows(case_rows, out)
        rows += case_rows
    return rows


COLUMNS = ["shape", "set", "pass", "provider", "median ms", "IQR ms", "vs torch", "RATE", "% floor",
           "saved MiB", "peak MiB"]
WIDTHS = [16, 10, 7, 11, 10, 8, 8, 8, 7, 9, 9]


def print_header(bench: OpBench, dtype: torch.dtype, settings: Settings, out: TextIO) -> None:
    floor = bench.floor
    print(f"\n{bench.title} [{bench.name}], {dtype_name(dtype)}, {settings.device.type}", file=out)
    print(f"  floor = {floor.name}: {floor.doc}" if floor.doc else f"  floor = {floor.name}", file=out)
    cols = [c.replace("RATE", bench.unit) for c in COLUMNS]
    print("  ".join(c.rjust(w) for c, w in zip(cols, WIDTHS)), file=out)
    print("  ".join("-" * w for w in WIDTHS), file=out)


def _fmt(value: Optional[float], spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_rows(rows: list[dict], out: TextIO) -> None:
    for r in rows:
        mib = lambda n: None if n is None else n / 2**20  # noqa: E731
        cells = [
            label(tuple(r["shape"])), r["set"], r["pass"], r["provider"],
            _fmt(r["median_ms"], ".3f"), _fmt(r["iqr_ms"], ".3f"), _fmt(r["vs_torch"], ".2f") + "x",
            _fmt(r["rate"], ".1f"), _fmt(r["floor_pct"], ".0f"),
            _fmt(mib(r["saved_bytes"]), ".1f"), _fmt(mib(r["peak_extra_bytes"]), ".1f"),
        ]
        print("  ".join(str(c).rjust(w) for c, w in zip(cells, WIDTHS)), file=out, flush=True)


def check_targets(benches: Sequence[OpBench], rows: Sequence[dict]) -> list[dict]:
    """The figures the issues ask for, for every target whose case was measured in this run."""
    found = []
    for bench in benches:
        for target in bench.checks:
            for r in rows:
                if (r["op"], r["pass"], r["provider"]) != (bench.name, target.passes, target.provider):
                    continue
                if target.shape is not None and tuple(r["shape"]) != target.shape:
                    continue
                if target.quantity == "speedup":
                    versus = [v for v in rows if v["provider"] == target.versus and v["op"] == r["op"]
                              and v["shape"] == r["shape"] and v["dtype"] == r["dtype"] and v["pass"] == r["pass"]]
                    value = versus[0]["median_ms"] / r["median_ms"] if versus else None
                else:
                    value = None if not r["floor_pct"] else 100.0 / r["floor_pct"]
                if value is None:
                    continue
                found.append(dict(op=bench.name, shape=r["shape"], dtype=r["dtype"], provider=target.provider,
                                  **{"pass": target.passes}, quantity=target.quantity, bound=target.bound,
                                  value=value, holds=target.holds(value), source=target.source,
                                  cache=r.get("cache", "warm"),
                                  text=target.describe()))
    return found


def print_targets(found: Sequence[dict], out: TextIO) -> None:
    if not found:
        return
    cold = any(t.get("cache") == "cold" for t in found)
    print("\nTargets from the issues (measured in this run" + (", cache-cold: every call timed with its "
          "inputs evicted from the caches; the issues' targets are set for the default run" if cold else "")
          + "):", file=out)
    for t in found:
        verdict = "holds" if t["holds"] else "MISSED"
        print(f"  {t['source']}: {t['op']} {label(tuple(t['shape']))} {t['dtype']} {t['pass']} {t['provider']}: "
              f"{t['text']}: {t['value']:.2f}  {verdict}", file=out)


def memory_note(device: torch.device) -> str:
    method = memory_method(device)
    return {
        "rss-high-water": "peak MiB: resident-set high-water mark of one call beyond its results",
        "torch.cuda.max_memory_allocated": "peak MiB: CUDA allocator peak of one call beyond its results",
    }.get(method, "peak MiB: not measured on this platform")


def run_module(benches: Sequence[OpBench], quick: bool, dtype: torch.dtype) -> list[dict]:
    """The old ``bench_<op>.run(quick)`` entry point of a module: its target shapes (tiny ones with
    quick), its table on stdout, its rows returned."""
    settings = Settings.quick(dtypes=(dtype,)) if quick else Settings(dtypes=(dtype,), shapes="targets")
    return run(benches, settings, progress=Progress(0, enabled=False))
