"""64-bit offsets: operators on a tensor with more than 2^31 elements (slow: ~4 GiB in and out).

The kernels index with int64_t throughout (csrc/cpu); this checks planes on both sides of element
2^31, where a 32-bit offset would wrap. Skipped, with the reason, where the machine lacks the memory.
"""
import os
from typing import Optional

import pytest
import torch

import din_ops
from din_ops import reference

PLANE = (32, 32)
C = 2**21 + 1  # (1, C, 32, 32): 2^31 + 1024 elements; plane 2^21 starts at element 2^31
PERIOD = 251  # prime, so consecutive planes differ (and every value is exact in bfloat16)


def mem_available_bytes() -> Optional[int]:
    """Memory available to a new allocation: MemAvailable from /proc/meminfo (Linux), else the free
    physical pages where sysconf has them; None where neither exists (e.g. macOS)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def patterned(shape, dtype) -> torch.Tensor:
    """x.flatten()[i] = i % PERIOD, filled without an int64 tensor of the full size."""
    x = torch.empty(shape, dtype=dtype)
    flat = x.view(-1)
    pattern = torch.arange(PERIOD, dtype=dtype)
    rows = flat.numel() // PERIOD
    flat[: rows * PERIOD].view(rows, PERIOD).copy_(pattern.expand(rows, PERIOD))
    flat[rows * PERIOD :].copy_(pattern[: flat.numel() - rows * PERIOD])
    return x


@pytest.mark.slow
def test_more_than_2_31_elements():
    dtype = torch.bfloat16
    numel = C * PLANE[0] * PLANE[1]
    assert numel > 2**31
    need = 2 * numel * 2 + 2 * 2**30  # x and one output, plus headroom
    available = mem_available_bytes()
    if available is None:
        pytest.skip("cannot tell the free memory here (no /proc/meminfo or sysconf SC_AVPHYS_PAGES); "
                    f"needs {need / 2**30:.1f} GiB for a 2^31-element tensor")
    if available < need:
        pytest.skip(f"needs {need / 2**30:.1f} GiB of free memory for a 2^31-element tensor, "
                    f"MemAvailable is {available / 2**30:.1f} GiB")
    x = patterned((1, C, *PLANE), dtype)
    # Planes at the start, just below and at element 2^31, and the last one (past it).
    planes = [0, 1, 2**21 - 1, 2**21, C - 1]
    xs = x[:, planes].double()
    assert not torch.equal(xs[0, -2], xs[0, 0])  # the planes really differ
    tol = 2 * torch.finfo(dtype).eps

    def check(y, expected):
        assert y.shape == x.shape
        got = y[:, planes].double()
        assert (got - expected).abs().max().item() <= tol * max(1.0, expected.abs().max().item())

    y = din_ops.instance_norm(x)
    check(y, reference.instance_norm(xs))
    del y
    gamma = torch.linspace(0.5, 2.0, C, dtype=dtype).view(1, C, 1, 1)
    y = din_ops.spatially_adaptive_instance_norm(x, gamma)
    check(y, reference.spatially_adaptive_instance_norm(xs, gamma[:, planes].double()))
    del y
    w = torch.tensor([[0.0, 0.25, 0.0], [0.25, 0.5, -0.25], [0.0, -0.25, 0.0]], dtype=dtype).expand(1, C, 1, 3, 3)
    y = din_ops.dynamic_instance_norm(x, w, padding=1, groups=C)
    check(y, reference.dynamic_instance_norm(xs, w[:, planes].double(), padding=1, groups=len(planes)))
