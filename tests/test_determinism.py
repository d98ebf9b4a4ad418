"""Results are bitwise repeatable for a fixed thread count, also when called from several threads.

On CUDA the kernels reduce in a fixed order and use no atomics, and cuBLAS is bitwise repeatable on
one stream, so the same holds there."""
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
