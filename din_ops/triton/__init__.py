"""Triton kernels for din_ops: ``backend="triton"``.

One module per operator family, each with its forward and backward kernels and the registration of
its operators in the ``din_ops`` namespace:

  instance_norm                     din_ops::triton_instance_norm (+ _backward)
  dynamic_instance_norm             din_ops::triton_dynamic_instance_norm_1x1 (+ _backward)
  spatially_adaptive_instance_norm  din_ops::triton_spatially_adaptive_instance_norm (+ _backward)

The operators have the schemas of their C++ counterparts in csrc/din_ops.cpp (outputs, float64
(N, C) statistics, backward signatures), so autograd and the tests treat both alike.

On a CUDA machine they are ``torch.library.triton_op`` with ``wrap_triton`` launches, so that
``torch.compile`` sees the kernels themselves. Under the Triton interpreter (``TRITON_INTERPRET=1``
set before din_ops is imported) they run on CPU tensors and are registered as
``torch.library.custom_op`` with fake kernels instead, because a ``triton_op`` cannot be traced there
(fake tensors have no data pointer for the interpreter).

Triton is optional (``pip install din_ops[triton]``). This module imports it only when the backend can
run: :func:`available` says whether it does, :func:`why_unavailable` why not.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
from typing import Optional

import torch

_TRUE = ("1", "true", "yes", "on", "y")


def interpreting() -> bool:
    """Whether TRITON_INTERPRET is set (read as Triton reads it)."""
    return os.environ.get("TRITON_INTERPRET", "").strip().lower() in _TRUE


_FAMILIES = ("instance_norm", "dynamic_instance_norm", "spatially_adaptive_instance_norm")


def _version(module) -> tuple[int, ...]:
    return tuple(int(p) for p in module.__version__.split("+")[0].split(".")[:2] if p.isdigit())


def _interpreter_broken() -> Optional[str]:
    """Why the Triton interpreter cannot run the kernels with the installed packages, or None.
    triton <= 3.6 under numpy >= 2.4: a loop with a run-time bound fails inside the interpreter
    ("only 0-dimensional arrays can be converted to Python scalars")."""
    if not interpreting():
        return None
    import numpy
    import triton

    if _version(triton) < (3, 7) and _version(numpy) >= (2, 4):
        return (
            f"the interpreter of triton {triton.__version__} fails with numpy {numpy.__version__} "
            "(loops with a run-time bound); use numpy < 2.4 or triton >= 3.7 to interpret the kernels"
        )
    return None


def _load() -> Optional[str]:
    """Imports triton and registers the operators; returns why that could not be done, or None."""
    if importlib.util.find_spec("triton") is None:
        return (
            "triton is not installed: `pip install triton` (or `pip install din_ops[triton]`); "
            "GPU machines with a CUDA build of torch usually have it already"
        )
    if not interpreting() and not torch.cuda.is_available():
        return (
            "no CUDA device (torch.cuda.is_available() is False) and TRITON_INTERPRET is not set: set "
            "TRITON_INTERPRET=1 before importing din_ops to run the Triton kernels on CPU tensors "
            "with the Triton interpreter (slow; for testing)"
        )
    broken = _interpreter_broken()
    if broken:
        return broken
    try:
        for family in _FAMILIES:
            importlib.import_module(f"{__name__}.{family}")
    except (ImportError, RuntimeError, AttributeError) as error:
        return f"importing triton or the din_ops Triton kernels failed: {type(error).__name__}: {error}"
    return None


_ERROR = _load()


def available() -> bool:
    """True when the Triton operators are registered and can run here."""
    return _ERROR is None


def why_unavailable() -> str:
    """Why ``backend="triton"`` cannot run here (empty when it can)."""
    return _ERROR or ""


def runs_on(device: torch.device) -> bool:
    """Whether the Triton kernels take tensors of ``device``: CUDA tensors, and CPU tensors under
    the interpreter."""
    return device.type == "cuda" or (device.type == "cpu" and interpreting())
