"""Timing, memory accounting and table printing shared by the benchmark modules."""
from __future__ import annotations

import ctypes
import datetime
import platform
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

import din_ops


def steady_allocations() -> bool:
    """Keep freed memory in the process (glibc): no mmap per large tensor, no trimming.

    Otherwise every tensor of 32 MiB or more is a fresh mmap, and each call pays thousands of page
    faults whose cost swings with what else the machine does. With this, every provider reuses its
    buffers, as in a steady training loop. Returns False where it does not apply.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
        return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 2**30))
    except (OSError, AttributeError):
        return False


def machine() -> str:
    """One line naming the device, the software and the date."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (
        f"{cpu} (din_ops CPU kernels: {din_ops.cpu_capability()}), {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}, "
        f"{datetime.date.today().isoformat()}"
    )


def timeit(fn: Callable[[], object], *, min_time: float = 0.3, min_reps: int = 5) -> tuple[float, float]:
    """Median and interquartile spread of fn's wall time in seconds (after two warm-up calls)."""
    return compare({"fn": fn}, min_time=min_time, min_reps=min_reps)["fn"]


def compare(fns: dict[str, Callable[[], object]], *, min_time: float = 0.3,
            min_reps: int = 7) -> dict[str, tuple[float, float]]:
    """Median and interquartile spread of each function's wall time, in seconds.

    The functions run in turn, round after round, so that a slow patch of the machine (other tenants,
    frequency changes) hits all of them alike: the ratios between them are what to trust. (The
    timing loop is ``measure.measure``'s.)
    """
    from .measure import measure

    timings = measure(fns, min_time=min_time, min_reps=min_reps, max_reps=200, warmup=2)
    return {name: (t.median, t.iqr) for name, t in timings.items()}


def forward_backward(fn: Callable[..., torch.Tensor], inputs: list[torch.Tensor]) -> Callable[[], None]:
    """A closure running fn(*inputs) and its backward with a fixed upstream gradient."""
    leaves = [t.detach().requires_grad_(t.is_floating_point()) for t in inputs]
    grad = torch.randn_like(fn(*leaves))

    def run() -> None:
        for t in leaves:
            t.grad = None
        fn(*leaves).backward(grad)

    return run


def saved_bytes(fn: Callable[..., torch.Tensor], inputs: list[torch.Tensor]) -> int:
    """Bytes of the distinct tensors autograd saves for backward when running fn(*inputs)."""
    leaves = [t.detach().requires_grad_(t.is_floating_point()) for t in inputs]
    seen: dict[tuple[int, int], int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        key = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        seen[key] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(*leaves)
    return sum(seen.values())


@dataclass
class Table:
    """A plain-text table printed row by row as results arrive."""

    columns: list[str]
    widths: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.widths = [max(len(c), 10) for c in self.columns]

    def header(self) -> None:
        print("  ".join(c.rjust(w) for c, w in zip(self.columns, self.widths)))
        print("  ".join("-" * w for w in self.widths))

    def row(self, cells: list[object]) -> None:
        print("  ".join(str(c).rjust(w) for c, w in zip(cells, self.widths)), flush=True)


def ms(t: Optional[float]) -> str:
    return "-" if t is None else f"{t * 1e3:.2f}"


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x"


def mib(n: int) -> str:
    return f"{n / 2**20:.1f}"
