"""Resident memory does not grow over many forward+backward calls (no leak per call, in the kernels
or in the autograd/registration glue)."""
import gc
import os
import time

import pytest
import torch

import din_ops

STATM = "/proc/self/statm"


def rss_bytes() -> int:
    """Resident set size of this process, from /proc/self/statm (second field, in pages)."""
    with open(STATM) as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# The current resident size is read from Linux's /proc (getrusage only has the peak).
@pytest.mark.skipif(not os.path.exists(STATM), reason=f"needs {STATM} (Linux) to read the resident set size")
def test_ten_thousand_calls_do_not_grow_rss():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 5, 6, generator=gen, requires_grad=True)
    w1 = torch.randn(2, 3, 4, generator=gen, requires_grad=True)
    wk = torch.randn(2, 4, 2, 3, 3, generator=gen, requires_grad=True)
    b = torch.randn(2, 3, generator=gen, requires_grad=True)
    b4 = torch.randn(2, 4, generator=gen, requires_grad=True)
    wd = torch.randn(2, 4, 1, 3, 3, generator=gen, requires_grad=True)
    gamma = torch.randn(2, 4, 1, 1, generator=gen, requires_grad=True)
    offset = torch.randn(2, 36, 5, 6, generator=gen, requires_grad=True)
    mask = torch.rand(2, 18, 5, 6, generator=gen).requires_grad_()
    # The six operator families in turn, each forward and backward (with accumulating gradients).
    calls = [
        lambda: din_ops.instance_norm(x),
        lambda: din_ops.dynamic_instance_norm(x, w1, b),
        lambda: din_ops.dynamic_instance_norm(x, wk, b4, padding=1, groups=2),
        lambda: din_ops.dynamic_conv2d(x, wd, b4, groups=4),
        lambda: din_ops.spatially_adaptive_instance_norm(x, gamma, gamma),
        lambda: din_ops.dynamic_instance_norm(x, wk, b4, padding=1, groups=2, offset=offset, mask=mask),
    ]

    def run(count):
        for i in range(count):
            calls[i % len(calls)]().sum().backward()

    run(1000)  # warm-up: allocator pools, lazily initialized state, the first gradient buffers
    gc.collect()
    before = rss_bytes()
    start = time.perf_counter()
    run(10_000)
    elapsed = time.perf_counter() - start
    gc.collect()
    grown = rss_bytes() - before
    # A leak of even 1 KiB per call would add ~10 MiB; the allocator's noise is well below 4 MiB.
    assert grown < 4 * 2**20, f"RSS grew by {grown / 2**20:.1f} MiB over 10,000 calls ({elapsed:.1f} s)"
    assert torch.isfinite(x.grad).all()
