"""The list of operator benchmarks that ``din-bench`` runs, and how a module adds one.

An operator benchmark is one ``bench_<name>.py`` module in this package. It declares what to run and
the runner (``benchmarks/runner.py``) does the rest: every available din_ops backend, the plain
PyTorch composition, the floor, timing, memory, the table, the JSON and the pytest-benchmark cases.

New style (preferred), in ``benchmarks/bench_<name>.py``::

    BENCHES = [OpBench(
        name="instance_norm",                      # what --ops selects
        title="instance_norm (no affine)",
        inputs=lambda shape, dtype, device: [torch.randn(*shape, dtype=dtype, device=device)],
        din=lambda backend: lambda x: din_ops.instance_norm(x, backend=backend),
        pytorch=F.instance_norm,                   # how PyTorch users write it today
        floor=Floor("copy", fwd=lambda x: lambda: x.clone(), ...),
        work=lambda shape, itemsize: Work(...),     # bytes / FLOPs of the minimal computation
        unit="GB/s",
        targets=[(8, 64, 128, 128), ...],           # the shapes the op's issue states targets for
    )]

Old style: a module with only ``run(quick: bool) -> list[dict]`` that prints its own table (the way
the first benchmark modules were written). Such a ``bench_*.py`` module is found and run as it is
(its rows go to the JSON under "legacy"). A module elsewhere is added with one line::

    registry.add_legacy("model", my_package.bench_model.run)

Modules are discovered by name (``bench_*.py`` in this folder), so adding a file is all it takes.
"""
from __future__ import annotations

import importlib
import inspect
import pkgutil
import sys
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import torch

Shape = tuple[int, int, int, int]


@dataclass(frozen=True)
class Work:
    """The minimal memory traffic (bytes) and arithmetic (FLOPs, a multiply-add counting 2) of a call.

    ``rate`` in the table is work / median time: bytes for memory-bound ops (GB/s), FLOPs for
    GEMM-bound ops (GFLOP/s); the op's ``unit`` says which.
    """

    fwd_bytes: float
    fwdbwd_bytes: float
    fwd_flops: float = 0.0
    fwdbwd_flops: float = 0.0


@dataclass
class Floor:
    """What no implementation can beat, measured in the same run (a bare bmm, a copy of the same bytes).

    ``fwd(*inputs)`` and ``fwdbwd(*inputs, gy)`` build zero-argument closures over the case's
    inputs (and the upstream gradient for forward+backward); ``fwdbwd`` may be None.
    """

    name: str
    fwd: Callable[..., Callable[[], object]]
    fwdbwd: Optional[Callable[..., Callable[[], object]]] = None
    doc: str = ""


@dataclass
class Extra:
    """Another implementation to time beside the backends (e.g. torchvision's deform_conv2d on a GPU).

    ``available(device, dtype)`` guards it (an import that may fail, a device or dtype it needs); ``fn`` has the
    op's call signature.
    """

    name: str
    available: Callable[[torch.device, torch.dtype], bool]
    fn: Callable[..., torch.Tensor]


@dataclass(frozen=True)
class Target:
    """A figure an issue asks for: ``speedup`` (time of ``versus``, by default the torch composition,
    / this time) >= bound, or ``over_floor`` (this time / floor time) <= bound, for one provider on one
    shape (None: every shape) and pass."""

    shape: Optional[Shape]
    passes: str  # "fwd" or "fwd+bwd"
    provider: str  # a backend name: "cpu", "cuda", "triton"
    quantity: str  # "speedup" or "over_floor"
    bound: float
    source: str  # where the target comes from, e.g. "issue 4"
    versus: str = "torch"  # the provider a speedup is measured against

    def holds(self, value: float) -> bool:
        return value >= self.bound if self.quantity == "speedup" else value <= self.bound

    def describe(self) -> str:
        rel = ">=" if self.quantity == "speedup" else "<="
        what = f"{self.versus} / ours" if self.quantity == "speedup" else "ours / floor"
        return f"{what} {rel} {self.bound:g}"


@dataclass
class OpBench:
    """One operator's benchmark: how to build its inputs and call it every way it is compared.

    Attributes:
        name: what ``--ops`` selects and the JSON calls the op.
        title: one line printed above the op's table.
        inputs: ``(shape, dtype, device) -> list[Tensor]``; shape is the content tensor's (N, C, H, W).
        din: ``backend -> callable(*inputs)``: the din_ops call on that backend.
        pytorch: ``callable(*inputs)``: the plain-PyTorch composition users write today (the baseline
            of the "vs torch" ratio).
        floor: the floor measured in the same run.
        work: ``(shape, itemsize) -> Work``.
        unit: "GB/s" or "GFLOP/s": which of the Work figures the rate column uses.
        targets: the op's own target shapes (run by default beside the model's shapes).
        gpu_targets: more target shapes, run only on a GPU.
        checks: the figures its issues ask for (printed as a summary at the end of a run).
        extras: more implementations for the table, each guarded.
        accepts: ``shape -> bool``; shapes it cannot run (e.g. C not divisible by groups) are skipped.
        available: ``() -> bool``; False drops the op (an op that this din_ops version lacks).
        backends: the din_ops backends that implement the op (None: all of them).
    """

    name: str
    title: str
    inputs: Callable[[Shape, torch.dtype, torch.device], list[torch.Tensor]]
    din: Callable[[str], Callable[..., torch.Tensor]]
    pytorch: Callable[..., torch.Tensor]
    floor: Floor
    work: Callable[[Shape, int], Work]
    unit: str = "GB/s"
    targets: Sequence[Shape] = ()
    gpu_targets: Sequence[Shape] = ()
    checks: Sequence[Target] = ()
    extras: Sequence[Extra] = ()
    accepts: Callable[[Shape], bool] = lambda shape: True
    available: Callable[[], bool] = lambda: True
    backends: Optional[Sequence[str]] = None
    module: str = field(default="", compare=False)

    def rate(self, work: Work, passes: str, seconds: float) -> float:
        """Achieved GB/s or GFLOP/s of a call of the given pass that took ``seconds``."""
        if self.unit == "GFLOP/s":
            amount = work.fwd_flops if passes == "fwd" else work.fwdbwd_flops
        else:
            amount = work.fwd_bytes if passes == "fwd" else work.fwdbwd_bytes
        return amount / seconds / 1e9


@dataclass
class Legacy:
    """A benchmark in the old style: ``run(quick) -> list[dict]``, printing its own table."""

    name: str
    run: Callable[..., list]

    def call(self, quick: bool, dtype: torch.dtype) -> list:
        params = inspect.signature(self.run).parameters
        if "dtype" in params:
            return self.run(quick, dtype=dtype)
        return self.run(quick)


_OPS: dict[str, OpBench] = {}
_LEGACY: dict[str, Legacy] = {}
_FAILED: dict[str, str] = {}
_DISCOVERED = False


def register(bench: OpBench) -> OpBench:
    """Adds an operator benchmark (a later one with the same name replaces it)."""
    _OPS[bench.name] = bench
    return bench


def add_legacy(name: str, run: Callable[..., list]) -> None:
    """Adds an old-style benchmark: ``run(quick)`` (optionally ``dtype=``) returning a list of dicts."""
    _LEGACY[name] = Legacy(name, run)


def discover() -> None:
    """Imports every ``bench_*.py`` module of this package once and registers what it declares.

    A module that fails to import (a missing optional package) is recorded, reported by
    :func:`failed`, and skipped; the others still run.
    """
    global _DISCOVERED
    if _DISCOVERED:
        return
    _DISCOVERED = True
    package = sys.modules[__package__]
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if not info.name.startswith("bench_"):
            continue
        try:
            module = importlib.import_module(f"{__package__}.{info.name}")
        except Exception as error:  # an optional dependency missing: report it, run the rest
            _FAILED[info.name] = f"{type(error).__name__}: {error}"
            continue
        benches = getattr(module, "BENCHES", None)
        if benches is not None:
            for bench in benches:
                bench.module = info.name
                register(bench)
        elif callable(getattr(module, "run", None)):
            add_legacy(info.name[len("bench_"):], module.run)


def ops() -> list[OpBench]:
    """The registered operator benchmarks whose op exists in this din_ops, in discovery order."""
    discover()
    return [b for b in _OPS.values() if b.available()]


def legacy() -> list[Legacy]:
    discover()
    return list(_LEGACY.values())


def failed() -> dict[str, str]:
    """Modules that could not be imported, with the error."""
    discover()
    return dict(_FAILED)


def select(names: Optional[Sequence[str]]) -> tuple[list[OpBench], list[Legacy]]:
    """The benchmarks picked by ``--ops``: exact names or substrings of them; None picks all.

    Raises ValueError for a name that matches nothing, listing the known names.
    """
    all_ops, all_legacy = ops(), legacy()
    if not names:
        return all_ops, all_legacy
    picked_ops, picked_legacy = [], []
    for name in names:
        exact = [b for b in all_ops if b.name == name] + [b for b in all_legacy if b.name == name]
        found = exact or [b for b in all_ops + all_legacy if name in b.name]
        if not found:
            known = ", ".join(b.name for b in all_ops + all_legacy)
            raise ValueError(f"din-bench: no benchmark matches {name!r}; known: {known}")
        for b in found:
            target = picked_ops if isinstance(b, OpBench) else picked_legacy
            if b not in target:
                target.append(b)
    return picked_ops, picked_legacy
