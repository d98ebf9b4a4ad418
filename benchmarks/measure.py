"""Timing with spread, peak extra memory of one call, and the machine description of a run.

Timing: the functions of one case run interleaved (as ``common.compare``), so a slow patch of a shared
machine hits all of them alike, in cycles of ``balanced_order``: each function comes after every pair
of others (second-to-last, last) once per cycle. What ran in the calls just before changes a call's
time on the CPU: a function that follows one reading the same inputs finds them in cache, one that
follows a function with large temporaries finds the cache full of their dirty lines, and it still
does two calls later (docs/benchmarks.md has the figures). Each function keeps all its times; the
median, the quartiles and the extremes are reported. Cache-cold timing (``din-bench --cold``) evicts
the caches before every timed call, untimed (``cache_flusher``).

Peak extra memory ("workspace") of one call:
  CPU (Linux): the process's resident-set high-water mark during the call. Before it, freed heap pages
  are returned to the system (glibc ``malloc_trim(0)``) and the kernel's high-water mark is reset
  (``/proc/self/clear_refs`` = 5); after it, ``VmHWM`` (from ``/proc/self/status``) minus the
  resident size before the call is the most memory the call had touched at once. This sees every
  allocation, tensors and the kernels' internal scratch alike, to the page; it can only over-count
  (when the allocator places a later buffer at a fresh address instead of reusing a freed one; pass
  ``repeats`` > 1 to take the smallest of several calls). The call is measured after the timing
  rounds, so lazy one-time allocations (thread pools, BLAS buffers) are not in it.
  CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``, minus what was
  allocated before the call (the caching allocator's view: everything the call allocated through it).
  The figure printed is that peak minus the bytes of what the call returns (y for forward, the input
  gradients for forward+backward): the memory a user pays beyond the results.
"""
from __future__ import annotations

import ctypes
import datetime
import glob
import os
import platform
import random
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Optional

import torch

import din_ops


@dataclass(frozen=True)
class Timing:
    """Wall times of one function over the rounds of a measurement, in seconds."""

    median: float
    q1: float
    q3: float
    min: float
    max: float
    reps: int

    @property
    def iqr(self) -> float:
        return self.q3 - self.q1

    def as_ms(self) -> dict[str, float]:
        return {
            "median_ms": self.median * 1e3,
            "q1_ms": self.q1 * 1e3,
            "q3_ms": self.q3 * 1e3,
            "iqr_ms": self.iqr * 1e3,
            "min_ms": self.min * 1e3,
            "max_ms": self.max * 1e3,
            "reps": self.reps,
        }


def _quantile(sorted_times: list[float], q: float) -> float:
    """Linear-interpolated quantile of sorted values."""
    pos = q * (len(sorted_times) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(sorted_times) - 1)
    return sorted_times[lo] + (sorted_times[hi] - sorted_times[lo]) * (pos - lo)


def balanced_order(n: int, rng: Optional[random.Random] = None) -> list[int]:
    """A cyclic order of calls to n functions (their indices) balanced over the two calls before
    each one: every (a, b, c) with a != b and b != c occurs once as three consecutive calls. So each
    function runs (n - 1)^2 times, n - 1 times right after each other function, and with each
    function two calls back equally often. n * (n - 1)^2 calls; the last ones lead into the first
    ones of the next cycle. ``[0]`` for n = 1, ``[0, 1]`` for n = 2. ``rng`` picks one of the many
    such orders (default: seed 0).

    It is an Eulerian circuit of the graph whose vertices are the ordered pairs (a, b), a != b, with
    an edge (a, b) -> (b, c) for each c != b: every vertex has n - 1 edges in and n - 1 out."""
    if n < 1:
        raise ValueError(f"balanced_order: expected n >= 1, got {n}")
    if n <= 2:
        return list(range(n))
    rng = rng or random.Random(0)
    # Hierholzer's algorithm: follow unused edges until stuck, then back up, emitting the circuit.
    # The edges are taken in random order: in a fixed one, each function's calls would bunch up in
    # one part of the cycle.
    unused = {(a, b): rng.sample([c for c in range(n) if c != b], n - 1)
              for a in range(n) for b in range(n) if a != b}
    stack, circuit = [(0, 1)], []
    while stack:
        a, b = stack[-1]
        if unused[(a, b)]:
            stack.append((b, unused[(a, b)].pop()))
        else:
            circuit.append(stack.pop())
    circuit.reverse()  # starts and ends at (0, 1): n * (n - 1)^2 edges
    return [b for _, b in circuit[1:]]


def measure(
    fns: dict[str, Callable[[], object]],
    *,
    min_time: float = 0.1,
    min_reps: int = 5,
    max_reps: int = 200,
    max_time: float = float("inf"),
    warmup: int = 2,
    sync: Optional[Callable[[], None]] = None,
    before: Optional[Callable[[], None]] = None,
) -> dict[str, Timing]:
    """Times each function, interleaved in whole cycles of :func:`balanced_order`, until every one has
    run ``min_reps`` times and about ``min_time`` seconds (or ``max_reps`` times, rounded up to a
    whole cycle). Slow cases stop earlier: once the calls together took ``max_time`` seconds and each
    function has run 3 times (or ``min_reps``, if fewer), even within a cycle.

    ``sync`` (e.g. ``torch.cuda.synchronize``) runs after each call, inside its timed interval.
    ``before`` (e.g. :func:`cache_flusher`'s) runs before each timed call, outside the interval,
    followed by ``sync``; its time counts toward ``min_time`` and ``max_time``.
    """
    sync = sync or (lambda: None)
    for fn in fns.values():
        for _ in range(warmup):
            fn()
        sync()
    names = list(fns)
    times: dict[str, list[float]] = {name: [] for name in fns}
    # A new order each cycle (seeded): what ran three or more calls before varies from cycle to cycle
    # instead of repeating.
    rng = random.Random(0)
    start = time.perf_counter()
    least = min(3, min_reps)
    done = False
    while not done:
        for name in [names[i] for i in balanced_order(len(names), rng)]:
            fn = fns[name]
            if before is not None:
                before()
                sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - t0)
            elapsed = time.perf_counter() - start
            if elapsed >= max_time and min(len(t) for t in times.values()) >= least:
                done = True
                break
        else:
            reps = min(len(t) for t in times.values())
            done = reps >= max_reps or (reps >= min_reps and elapsed >= min_time * len(fns))
    out = {}
    for name, ts in times.items():
        ts.sort()
        out[name] = Timing(statistics.median(ts), _quantile(ts, 0.25), _quantile(ts, 0.75), ts[0], ts[-1], len(ts))
    return out


def _read(path: str) -> Optional[str]:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def last_level_cache_bytes(device: torch.device, sysfs: str = "/sys/devices/system/cpu") -> Optional[int]:
    """The bytes of the device's last-level caches together: on the CPU (Linux sysfs) every distinct
    cache of the highest level (one per socket or per chiplet: an EPYC has one L3 per CCD), on a GPU
    its L2; None where it cannot be read."""
    if device.type == "cuda":
        return getattr(torch.cuda.get_device_properties(device), "L2_cache_size", None) or None
    caches: dict[tuple[int, str], int] = {}  # (level, CPUs sharing it) -> bytes
    for index in glob.glob(os.path.join(sysfs, "cpu[0-9]*", "cache", "index[0-9]*")):
        level, size, shared = (_read(os.path.join(index, f)) for f in ("level", "size", "shared_cpu_list"))
        if level is None or size is None or not level.isdigit():
            continue
        unit = {"K": 2**10, "M": 2**20, "G": 2**30}.get(size[-1:].upper(), 1)
        digits = size.rstrip("KMGkmg")
        if digits.isdigit():
            caches[(int(level), shared or index)] = int(digits) * unit
    if not caches:
        return None
    top = max(level for level, _ in caches)
    return sum(size for (level, _), size in caches.items() if level == top)


# Evicting at least this much where the cache size is unknown (or smaller): more than the L3 of
# common desktop and 2-socket server parts.
MIN_FLUSH_BYTES = 64 * 2**20


def flush_bytes(device: torch.device) -> int:
    """The size of :func:`cache_flusher`'s buffer: twice the last-level caches, at least
    MIN_FLUSH_BYTES."""
    return max(MIN_FLUSH_BYTES, 2 * (last_level_cache_bytes(device) or 0))


def cache_flusher(device: torch.device) -> tuple[Callable[[], None], int]:
    """A function that evicts the device's caches, and the bytes it moves: for cache-cold timing
    (``din-bench --cold``), where each call finds its inputs in memory, not in cache.

    CPU: reads a buffer of twice the last-level caches together (at least MIN_FLUSH_BYTES), with
    torch's threads, so every core's L2 and every L3 is swept. Reading leaves clean lines behind, so
    the timed call pays no write-back of the flush's data. GPU: writes a buffer of twice the L2, then
    reads a second one, so that the L2 holds clean lines (the write-back happens in the flush).
    """
    size = flush_bytes(device)
    buf = torch.ones(size // 4, dtype=torch.float32, device=device)
    if device.type == "cuda":
        clean = torch.ones_like(buf)
        return (lambda: (buf.zero_(), clean.sum())), 2 * size
    return (lambda: buf.sum()), size


def _libc():
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def _status_bytes(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def _rss_method_works() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        _status_bytes("VmHWM:")
        return _libc() is not None
    except (OSError, KeyError):
        return False


_RSS_OK: Optional[bool] = None


def memory_method(device: torch.device) -> str:
    """How :func:`peak_extra_bytes` measures on this device (for the JSON and the table header)."""
    global _RSS_OK
    if device.type == "cuda":
        return "torch.cuda.max_memory_allocated"
    if _RSS_OK is None:
        _RSS_OK = _rss_method_works()
    return "rss-high-water" if _RSS_OK else "none"


def _nbytes(result: object) -> int:
    if isinstance(result, torch.Tensor):
        return result.untyped_storage().nbytes()
    if isinstance(result, (list, tuple)):
        return sum(_nbytes(r) for r in result)
    return 0


def peak_extra_bytes(call: Callable[[], object], device: torch.device, repeats: int = 1) -> Optional[int]:
    """Peak memory of one ``call()`` beyond the bytes of what it returns (see the module docstring).

    None where the method does not apply (not Linux, or a device without a peak counter).
    """
    method = memory_method(device)
    if method == "none":
        return None
    best = None
    for _ in range(repeats):
        if method == "rss-high-water":
            libc = _libc()
            libc.malloc_trim(0)
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            before = _status_bytes("VmRSS:")
            result = call()
            peak = _status_bytes("VmHWM:") - before
        else:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
            result = call()
            torch.cuda.synchronize(device)
            peak = torch.cuda.max_memory_allocated(device) - before
        extra = max(0, peak - _nbytes(result))
        del result
        best = extra if best is None else min(best, extra)
    return best


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def _physical_cores() -> Optional[int]:
    try:
        with open("/proc/cpuinfo") as f:
            pairs = set()
            phys = core = None
            for line in f:
                if line.startswith("physical id"):
                    phys = line.split(":")[1].strip()
                elif line.startswith("core id"):
                    core = line.split(":")[1].strip()
                    pairs.add((phys, core))
            return len(pairs) or None
    except OSError:
        return None


THREAD_ENV = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")
# Settings that cap the instruction set of din_ops and of PyTorch's own CPU kernels (oneDNN, MKL,
# ATen), e.g. to measure AVX2 on an AVX-512 machine.
ISA_ENV = ("DIN_OPS_CPU_CAPABILITY", "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")
# Settings of the memory allocator: whether large tensors get 2 MiB pages (PyTorch >= 2.2) or another
# malloc is preloaded. Fresh large outputs page-fault on every call otherwise (docs/model.md).
ALLOC_ENV = ("THP_MEM_ALLOC_ENABLE", "LD_PRELOAD", "GLIBC_TUNABLES")


def machine_info(device: torch.device) -> dict:
    """What the figures of a run depend on: device, cores, threads, versions, date, load."""
    info = {
        "device": device.type,
        "cpu": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "physical_cores": _physical_cores(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "din_ops": din_ops.__version__,
        "backends": din_ops.available_backends(),
        # The instruction-set levels the CPU kernels run at: din_ops' and ATen's.
        "din_ops_cpu_capability": din_ops.cpu_capability(),
        "aten_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "load_average_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        # Settings that change the timings: thread counts, how idle OpenMP threads wait, instruction
        # sets and the allocator.
        "env": {k: os.environ[k] for k in THREAD_ENV + ISA_ENV + ALLOC_ENV if k in os.environ},
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def describe(info: dict) -> str:
    """One line for the table and the plots."""
    where = info.get("gpu") or info["cpu"]
    load = info.get("load_average_1m")
    busy = ""
    if load is not None and info.get("usable_cpus") and load > 0.5 * info["usable_cpus"]:
        busy = f", loaded machine (load {load:.1f} on {info['usable_cpus']} CPUs)"
    env = "".join(f", {k}={v}" for k, v in info.get("env", {}).items())
    isa = ""
    if info.get("device") == "cpu" and info.get("din_ops_cpu_capability"):
        isa = f" (CPU kernels: din_ops {info['din_ops_cpu_capability']}, ATen {info.get('aten_cpu_capability')})"
    return (
        f"{where}{isa}, {info['usable_cpus']} CPUs, {info['threads']} threads, torch {info['torch']}, "
        f"din_ops {info['din_ops']}, {info['date'][:10]}{busy}{env}"
    )
