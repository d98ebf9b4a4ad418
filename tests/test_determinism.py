"""Results are bitwise repeatable for a fixed thread count, also when called from several threads.

On CUDA the kernels reduce in a fixed order and use no atomics, and cuBLAS is bitwise repeatable on
one stream, so the same holds there."""
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

import din_ops

from conftest import DEVICES


def forward_backward(op, x, *params):
    leaves = [t.detach().clone().requires_grad_() for t in (x, *params)]
    y = op(*leaves)
    y.backward(torch.ones_like(y) * 0.5 + torch.linspace(0, 1, y.numel(), device=y.device).view_as(y))
    return [y.detach()] + [t.grad for t in leaves]


CASES = {
    "instance_norm": (lambda x: din_ops.instance_norm(x), []),
    "din_1x1": (lambda x, w, b: din_ops.dynamic_instance_norm(x, w, b), [(2, 48, 32), (2, 48)]),
    "din_depthwise": (lambda x, w, b: din_ops.dynamic_instance_norm(x, w, b, padding=1, groups=32), [(2, 32, 1, 3, 3), (2, 32)]),
    "din_grouped": (lambda x, w, b: din_ops.dynamic_instance_norm(x, w, b, padding=1, groups=4), [(2, 16, 8, 3, 3), (2, 16)]),
    "spatially_adaptive": (lambda x, g, b: din_ops.spatially_adaptive_instance_norm(x, g, b), [(2, 32, 40, 40), (2, 32, 1, 1)]),
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", CASES)
def test_repeatable_and_thread_safe(name, device):
    op, shapes = CASES[name]
    torch.manual_seed(0)
    x = (torch.randn(2, 32, 40, 40) + 3).to(device)
    params = [torch.randn(*s).to(device) for s in shapes]
    first = forward_backward(op, x, *params)
    again = forward_backward(op, x, *params)
    for a, b in zip(first, again):
        assert torch.equal(a, b)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: forward_backward(op, x, *params), range(8)))
    for result in results:
        for a, b in zip(first, result):
            assert torch.equal(a, b)


# More variants for the checks below: k x k without normalization, strided and dense kernels, and
# inputs in channels_last or with arbitrary strides.
MORE_CASES = {
    "dynamic_conv2d_grouped": (lambda x, w, b: din_ops.dynamic_conv2d(x, w, b, padding=1, groups=4), [(2, 16, 8, 3, 3), (2, 16)]),
    "din_dense_stride2": (lambda x, w, b: din_ops.dynamic_instance_norm(x, w, b, stride=2, dilation=2, padding=2), [(2, 8, 32, 3, 3), (2, 8)]),
    "din_1x1_channels_last": (lambda x, w, b: din_ops.dynamic_instance_norm(x.contiguous(memory_format=torch.channels_last), w, b), [(2, 48, 32), (2, 48)]),
    "instance_norm_strided": (lambda x: din_ops.instance_norm(x.transpose(2, 3).contiguous().transpose(2, 3)), []),
    "spatially_adaptive_channels_last": (lambda x, g, b: din_ops.spatially_adaptive_instance_norm(x.contiguous(memory_format=torch.channels_last), g, b), [(2, 32, 40, 40), (2, 32, 40, 40)]),
    # offsets up to ~1.5 pixels (unit normals), four offset groups, a modulation mask
    "deformable_din": (lambda x, w, b, o, m: din_ops.dynamic_instance_norm(x, w, b, offset=o, mask=m, padding=1, groups=2), [(2, 16, 16, 3, 3), (2, 16), (2, 72, 40, 40), (2, 36, 40, 40)]),
    "deformable_conv2d_stride2": (lambda x, w, o: din_ops.dynamic_conv2d(x, w, offset=o, stride=2, padding=1), [(2, 8, 32, 3, 3), (2, 18, 20, 20)]),
}
ALL_CASES = {**CASES, **MORE_CASES}


def inputs(name):
    _, shapes = ALL_CASES[name]
    gen = torch.Generator().manual_seed(len(name))
    x = torch.randn(2, 32, 40, 40, generator=gen) + 3
    return x, [torch.randn(*s, generator=gen) for s in shapes]


@pytest.mark.parametrize("name", MORE_CASES)
def test_more_variants_repeatable_and_thread_safe(name):
    op, _ = ALL_CASES[name]
    x, params = inputs(name)
    first = forward_backward(op, x, *params)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: forward_backward(op, x, *params), range(6)))
    for result in [forward_backward(op, x, *params)] + results:
        for a, b in zip(first, result):
            assert torch.equal(a, b)


def test_different_ops_at_once_match_serial_calls():
    # Every op at the same time from its own threads (the kernels share no state between calls).
    serial = {name: forward_backward(ALL_CASES[name][0], *_flat(inputs(name))) for name in ALL_CASES}
    jobs = [name for name in ALL_CASES for _ in range(2)]
    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(lambda name: (name, forward_backward(ALL_CASES[name][0], *_flat(inputs(name)))), jobs))
    for name, result in results:
        for a, b in zip(serial[name], result):
            assert torch.equal(a, b), name


def _flat(xp):
    x, params = xp
    return (x, *params)


@pytest.fixture
def deterministic_algorithms():
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(before)


@pytest.mark.parametrize("name", ALL_CASES)
def test_deterministic_algorithms_mode(name, deterministic_algorithms):
    # Every CPU kernel is deterministic for a fixed thread count, so none raises under
    # torch.use_deterministic_algorithms(True), and results are those of the default mode.
    op, _ = ALL_CASES[name]
    x, params = inputs(name)
    strict = forward_backward(op, x, *params)
    torch.use_deterministic_algorithms(False)
    default = forward_backward(op, x, *params)
    torch.use_deterministic_algorithms(True)
    for a, b in zip(strict, default):
        assert torch.equal(a, b)


def test_single_thread_repeatable():
    # With one intra-op thread too (a different, fixed reduction order: results are bitwise
    # repeatable for each thread count, not across thread counts).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for name in ("din_1x1", "din_grouped", "instance_norm"):
            op, _ = ALL_CASES[name]
            x, params = inputs(name)
            a, b = forward_backward(op, x, *params), forward_backward(op, x, *params)
            for s, t in zip(a, b):
                assert torch.equal(s, t)
    finally:
        torch.set_num_threads(before)


# A fresh process whose OpenMP default team (OMP_NUM_THREADS=4) is larger than the team torch is then
# told to use: the kernels must follow torch.set_num_threads (their per-thread buffers are sized by
# it), and share torch's OpenMP runtime (csrc/cpu/parallel.h: a clang build that brought its own
# libomp computed wrong weight gradients here).
THREADS_PROBE = """
import os, torch, din_ops
from din_ops import reference
torch.set_num_threads(2)
torch.manual_seed(0)
x = torch.randn(4, 16, 128, 128, dtype=torch.float64, requires_grad=True)
w = torch.randn(4, 8, 16, dtype=torch.float64, requires_grad=True)
b = torch.randn(4, 8, dtype=torch.float64, requires_grad=True)
y = din_ops.dynamic_instance_norm(x, w, b)
gy = torch.randn_like(y)
got = torch.autograd.grad(y, (x, w, b), gy)
want = torch.autograd.grad(reference.dynamic_instance_norm(x, w, b), (x, w, b), gy)
for g, e in zip(got, want):
    torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-10)
if os.path.exists("/proc/self/maps"):
    names = ("libgomp", "libomp", "libiomp5")
    with open("/proc/self/maps") as f:
        runtimes = {line.split()[-1] for line in f if os.path.basename(line.split()[-1]).startswith(names)}
    assert len(runtimes) == 1, f"OpenMP runtimes loaded: {sorted(runtimes)}"
print("ok")
"""


def test_kernels_follow_torch_threads_not_openmp_default():
    env = dict(os.environ, OMP_NUM_THREADS="4")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-c", THREADS_PROBE], cwd=root, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stdout + proc.stderr
