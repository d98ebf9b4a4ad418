"""torch.func transforms: what works with the compiled operators and what the README says does not.

vmap runs through PyTorch's per-slice fallback (values equal to a loop over the slices, gradients
through autograd as usual); torch.func.grad is refused by PyTorch for operators whose autograd is
registered with torch.library.register_autograd, and the reference backend serves it instead.
"""
import pytest
import torch

import din_ops

DT = torch.float64


@pytest.fixture
def operands():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 2, 4, 5, 5, dtype=DT, generator=g)  # 3 slices of a batch of 2
    w = torch.randn(3, 2, 6, 4, dtype=DT, generator=g)
    b = torch.randn(3, 2, 6, dtype=DT, generator=g)
    return x, w, b


def test_vmap_equals_a_loop_over_slices_and_backpropagates(operands):
    x, w, b = operands
    w = w.clone().requires_grad_()
    y = torch.vmap(din_ops.dynamic_instance_norm)(x, w, b)
    expected = torch.stack([din_ops.dynamic_instance_norm(x[i], w[i], b[i]) for i in range(3)])
    torch.testing.assert_close(y, expected, rtol=1e-13, atol=1e-13)
    (gw,) = torch.autograd.grad(y.square().sum(), w)
    (gw_loop,) = torch.autograd.grad(expected.square().sum(), w)
    torch.testing.assert_close(gw, gw_loop, rtol=1e-13, atol=1e-13)
    style = torch.randn(3, 2, 4, 7, 7, dtype=DT)
    t = torch.vmap(lambda c, s: din_ops.adain(c, s, unbiased=True))(x, style)
    torch.testing.assert_close(t, torch.stack([din_ops.adain(x[i], style[i], unbiased=True) for i in range(3)]))


def test_func_grad_is_refused_and_the_reference_backend_serves_it(operands):
    x, w, b = (t[0] for t in operands)
    loss = lambda backend: lambda w: din_ops.dynamic_instance_norm(x, w, b, backend=backend).square().sum()  # noqa: E731
    with pytest.raises(RuntimeError, match="functorch transforms"):
        torch.func.grad(loss(None))(w)
    g = torch.func.grad(loss("reference"))(w)
    w = w.clone().requires_grad_()
    (expected,) = torch.autograd.grad(loss(None)(w), w)
    torch.testing.assert_close(g, expected, rtol=1e-12, atol=1e-12)
