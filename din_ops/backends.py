"""Which din_ops backends this installation has, and how one is chosen for a tensor.

Backends:
  "reference"  the pure-PyTorch formulas in :mod:`din_ops.reference` (any device, slow, exact).
  "cpu"        the C++ kernels in ``din_ops._C`` for CPU tensors.
  "cuda"       the CUDA kernels in ``din_ops._C`` for CUDA tensors (built only with a CUDA toolchain).
  "triton"     the Triton kernels in :mod:`din_ops.triton` for CUDA tensors, and for CPU tensors under
               the Triton interpreter (TRITON_INTERPRET=1 set before importing din_ops). Optional:
               needs the ``triton`` package; only chosen when asked for by name.

``backend=None`` picks the compiled backend for the tensor's device and never falls back to the
reference silently: if nothing is compiled for that device, the call raises and says how to get it.

Meta tensors (a model built under ``torch.device("meta")``, shape inference, FLOP counting): with
``backend=None`` the operators run their fake kernels, which compute the outputs' shapes, dtypes
and memory formats (the same ones torch.compile traces with) and no values. ``resolve`` names this
"meta"; it is not a backend to ask for.
"""
from __future__ import annotations

import importlib
from typing import Optional

import torch

ALL_BACKENDS = ("reference", "cpu", "cuda", "triton")

_extension_error: Optional[BaseException] = None
try:
    importlib.import_module("din_ops._C")
except ImportError as error:  # pragma: no cover - exercised only on a broken install
    _extension_error = error

# After _C, whose namespace the Triton operators join. Imports triton itself only where the backend
# can run (a GPU, or TRITON_INTERPRET=1), and never fails: din_ops.triton.why_unavailable() says why.
from . import triton as _triton  # noqa: E402

_BUILD_HINT = (
    "reinstall din_ops from its source folder with `pip install --no-build-isolation -e .` "
    "(see the README), or pass backend='reference' for the pure-PyTorch implementation"
)


def extension_loaded() -> bool:
    """True when the compiled library ``din_ops._C`` is loaded."""
    return _extension_error is None


def has_kernel(op: str, dispatch_key: str) -> bool:
    """Whether the compiled library registers a kernel of operator ``op`` for ``dispatch_key``."""
    return extension_loaded() and torch._C._dispatch_has_kernel_for_dispatch_key(op, dispatch_key)


def _has_kernel(dispatch_key: str) -> bool:
    return has_kernel("din_ops::instance_norm", dispatch_key)


def _discover() -> tuple[str, ...]:
    found = []
    if _has_kernel("CUDA") and torch.cuda.is_available():
        found.append("cuda")
    if _has_kernel("CPU"):
        found.append("cpu")
    if _triton.available():
        found.append("triton")
    found.append("reference")
    return tuple(found)


# Fixed for the life of the process; computed once so that torch.compile traces `resolve` as
# plain constants.
_AVAILABLE = _discover()


def available_backends() -> list[str]:
    """The backends that work on this installation and machine, compiled ones first."""
    return list(_AVAILABLE)


def cpu_capability() -> Optional[str]:
    """The instruction-set level the CPU kernels run at: ``"default"`` (the architecture's baseline),
    ``"avx2"`` or ``"avx512"``, or None when the compiled extension is not loaded.

    The best level the CPU supports is chosen once, when the extension loads; the environment
    variable ``DIN_OPS_CPU_CAPABILITY=default|avx2|avx512``, set before that, forces one. Raises
    RuntimeError when the variable names an unknown level or one this CPU lacks (every CPU kernel
    then raises the same error).
    """
    if not extension_loaded():
        return None
    return torch.ops.din_ops.cpu_capability()


def cpu_capabilities() -> list[str]:
    """The levels this CPU and this build can run, lowest first (e.g. ``["default", "avx2"]``); empty
    when the compiled extension is not loaded. Each can be forced with ``DIN_OPS_CPU_CAPABILITY``."""
    if not extension_loaded():
        return []
    return list(torch.ops.din_ops.cpu_capabilities())


def _why_unavailable(backend: str) -> str:
    if backend == "triton":
        return _triton.why_unavailable()
    if not extension_loaded():
        return f"the compiled extension failed to load ({_extension_error}); {_BUILD_HINT}"
    if backend == "cuda":
        if not _has_kernel("CUDA"):
            return (
                "din_ops was built without CUDA kernels: install it where nvcc and a CUDA build of "
                "torch are present (or set DIN_OPS_FORCE_CUDA=1), or pass backend='reference'"
            )
        return "torch.cuda.is_available() is False on this machine"
    return _BUILD_HINT


def resolve(backend: Optional[str], device: torch.device) -> str:
    """The backend that will run a call on tensors of ``device`` ("meta" for meta tensors: the
    operators' fake kernels).

    Raises ValueError for an unknown name or a backend that cannot run tensors of that device, and
    RuntimeError for a known backend that is not built or cannot run here.
    """
    if backend is not None and not isinstance(backend, str):
        raise TypeError(f"din_ops: expected backend to be a str or None, got {type(backend).__name__}")
    if backend is not None and backend not in ALL_BACKENDS:
        raise ValueError(
            f"din_ops: unknown backend {backend!r}; expected one of {', '.join(ALL_BACKENDS)} or None"
        )
    if backend == "reference":
        return backend
    if backend == "triton":
        return _resolve_triton(device)
    if backend is None and device.type == "meta":
        if not extension_loaded():
            raise RuntimeError(f"din_ops: the operators are not registered: {_why_unavailable('cpu')}")
        return "meta"
    wanted = backend if backend is not None else device.type
    if wanted != device.type:
        raise ValueError(
            f"din_ops: backend {backend!r} runs on {wanted} tensors, but the inputs are on {device}"
        )
    if wanted not in ALL_BACKENDS:
        raise RuntimeError(
            f"din_ops: no kernels for {device.type} tensors; pass backend='reference' to run the "
            "pure-PyTorch implementation there"
        )
    if wanted not in _AVAILABLE:
        raise RuntimeError(f"din_ops: backend {wanted!r} is not available: {_why_unavailable(wanted)}")
    return wanted


def _resolve_triton(device: torch.device) -> str:
    if "triton" not in _AVAILABLE:
        raise RuntimeError(f"din_ops: backend 'triton' is not available: {_why_unavailable('triton')}")
    if not _triton.runs_on(device):
        where = "CUDA tensors (and CPU tensors under TRITON_INTERPRET=1)"
        if device.type == "cpu":
            where = "CUDA tensors; CPU tensors only under the Triton interpreter (TRITON_INTERPRET=1)"
        raise ValueError(f"din_ops: backend 'triton' runs on {where}, but the inputs are on {device}")
    return "triton"
