"""Checks made by the operators themselves (direct torch.ops.din_ops calls, below the Python API):
eps, the device of every operand, including a meta tensor among CPU ones (which would dispatch to
the fake kernel), and weights with no output channel."""
import pytest
import torch

import din_ops

from conftest import DEVICES

ops = torch.ops.din_ops


def _x():
    return torch.randn(2, 4, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(3))


def _normalizing_calls(x, eps):
    w1 = torch.randn(2, 3, 4, dtype=x.dtype)
    w3 = torch.randn(2, 4, 2, 3, 3, dtype=x.dtype)
    off = torch.zeros(2, 18, 5, 5, dtype=x.dtype)
    return {
        "instance_norm": lambda: ops.instance_norm(x, eps),
        "dynamic_instance_norm_1x1": lambda: ops.dynamic_instance_norm_1x1(x, w1, None, eps),
        "dynamic_conv": lambda: ops.dynamic_conv(x, w3, None, [1, 1], [1, 1, 1, 1], [1, 1], 2, True, eps),
        "spatially_adaptive_instance_norm": lambda: ops.spatially_adaptive_instance_norm(
            x, torch.ones(2, 4, 1, 1, dtype=x.dtype), None, eps
        ),
        "deformable_conv": lambda: ops.deformable_conv(
            x, w3, None, off, None, [1, 1], [1, 1, 1, 1], [1, 1], 2, 1, True, eps
        ),
        "adain": lambda: ops.adain(x, x, eps, False),
    }


@pytest.mark.parametrize("eps", [-1e-5, float("nan")])
@pytest.mark.parametrize("op", list(_normalizing_calls(_x(), 0.0)))
def test_operators_refuse_a_negative_or_nan_eps(op, eps):
    with pytest.raises(ValueError, match="eps >= 0"):
        _normalizing_calls(_x(), eps)[op]()


def _backward_calls(x):
    y, mean, rstd = ops.instance_norm(x, 1e-5)
    gy = torch.randn_like(y)
    m, r = mean.to("meta"), rstd.to("meta")
    w3 = torch.randn(2, 4, 2, 3, 3, dtype=x.dtype)
    off = torch.zeros(2, 18, 5, 5, dtype=x.dtype)
    return {
        "instance_norm_backward": lambda: ops.instance_norm_backward(gy, x, m, r),
        "dynamic_conv_backward": lambda: ops.dynamic_conv_backward(
            gy, x, w3, m, r, [1, 1], [1, 1, 1, 1], [1, 1], 2, True
        ),
        "spatially_adaptive_instance_norm_backward": lambda: ops.spatially_adaptive_instance_norm_backward(
            gy, x, torch.ones(2, 4, 1, 1, dtype=x.dtype), m, r, False
        ),
        "deformable_conv_backward": lambda: ops.deformable_conv_backward(
            gy, x, w3, off, None, m, r, [1, 1], [1, 1, 1, 1], [1, 1], 2, 1, True
        ),
    }


@pytest.mark.parametrize("op", list(_backward_calls(_x())))
def test_backward_operators_refuse_statistics_on_another_device(op):
    with pytest.raises(ValueError, match="on the device of"):
        _backward_calls(_x())[op]()


def test_a_meta_operand_among_cpu_ones_is_refused_not_faked():
    x = _x()
    with pytest.raises(ValueError, match="expected style on the device of content"):
        ops.adain(x, x.to("meta"), 1e-5, True)
    with pytest.raises(ValueError, match="expected gamma on the device of x"):
        ops.spatially_adaptive_instance_norm(x, torch.ones(2, 4, 1, 1, device="meta"), None, 1e-5)
    with pytest.raises(ValueError, match="expected weight on the device of x"):
        ops.dynamic_instance_norm_1x1(x, torch.ones(2, 3, 4, device="meta"), None, 1e-5)
    # All on meta: the fake kernels give the shapes.
    y = ops.instance_norm(x.to("meta"), 1e-5)[0]
    assert y.device.type == "meta" and y.shape == x.shape


@pytest.mark.parametrize(
    "groups,kernel,padding", [(1, 3, 1), (2, 3, 0), (2, 1, 0), (4, 3, 1)], ids=["dense", "grouped", "grouped1x1", "depthwise"]
)
@pytest.mark.parametrize("device", DEVICES)
def test_weight_without_output_channels(groups, kernel, padding, device):
    # Co = 0: an empty output (as F.conv2d gives for groups = 1), zero input gradient, no crash.
    x = _x().to(device).requires_grad_()
    w = torch.randn(2, 0, 4 // groups, kernel, kernel, dtype=x.dtype, device=device, requires_grad=True)
    y = din_ops.dynamic_instance_norm(x, w, padding=padding, groups=groups)
    assert y.shape == (2, 0, 5 + 2 * padding - kernel + 1, 5 + 2 * padding - kernel + 1)
    y.sum().backward()
    assert x.grad.shape == x.shape and torch.count_nonzero(x.grad) == 0
    assert w.grad.shape == w.shape
    x2, w2 = x.detach().requires_grad_(), w.detach().requires_grad_()
    r = din_ops.dynamic_instance_norm(x2, w2, padding=padding, groups=groups, backend="reference")
    assert r.shape == y.shape
    r.sum().backward()
    assert torch.count_nonzero(x2.grad) == 0 and w2.grad.shape == w.shape
    y, mean, rstd = ops.dynamic_conv(x.detach(), w.detach(), None, [1, 1], [padding] * 4, [1, 1], groups, True, 1e-5)
    torch.testing.assert_close(mean, x.detach().mean((2, 3)).to(mean.device))


@pytest.mark.parametrize("normalize", [True, False], ids=["din", "conv"])
@pytest.mark.parametrize("device", DEVICES)
def test_deformable_weight_without_output_channels(normalize, device):
    # Co = 0 with offsets and a mask: an empty output; zero gradients of x, the offsets and the mask.
    x = _x().to(device).requires_grad_()
    w = torch.randn(2, 0, 4, 3, 3, dtype=x.dtype, device=device, requires_grad=True)
    offset = torch.randn(2, 18, 5, 5, dtype=x.dtype, device=device, requires_grad=True)
    mask = torch.rand(2, 9, 5, 5, dtype=x.dtype, device=device, requires_grad=True)
    fn = din_ops.dynamic_instance_norm if normalize else din_ops.dynamic_conv2d
    for backend in (None, "reference"):
        y = fn(x, w, offset=offset, mask=mask, padding=1, backend=backend)
        assert y.shape == (2, 0, 5, 5)
        gx, gw, goff, gmask = torch.autograd.grad(y.sum(), (x, w, offset, mask))
        assert gw.shape == w.shape
        for g, t in ((gx, x), (goff, offset), (gmask, mask)):
            assert g.shape == t.shape and torch.count_nonzero(g) == 0
